"""Tampering with any stored entry, node or checkpoint makes `verify` fail and say where."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovra.audit import AuditLog
from sovra.audit.merkle import compact_range, fold_nodes, leaf_hash, node_hash
from sovra.audit.note import Checkpoint, NoteSigner, sign_note
from sovra.audit.store import node_key
from tests.support.audit import LogFactory, make_event

N = 37


class Raw:
    """Direct SQL on a log's tables, bypassing the log: what an attacker with DB access does."""

    def __init__(self, logs: LogFactory, log: AuditLog) -> None:
        self.kind = logs.kind
        if logs.kind == "sqlite":
            self.conn: Any = sqlite3.connect(
                logs.home / "audit" / "log.sqlite", isolation_level=None
            )
            self.t = ""
            self.p = "?"
        else:
            import psycopg

            assert logs.url
            self.conn = psycopg.connect(logs.url, autocommit=True)
            self.t = logs.schema + "."
            self.p = "%s"

    def run(self, sql: str, *args: object) -> list[Any]:
        sql = sql.replace("{t}", self.t).replace("?", self.p)
        cur = self.conn.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []

    def entry(self, i: int) -> bytes:
        return bytes(self.run("SELECT data FROM {t}entries WHERE idx = ?", i)[0][0])

    def set_entry(self, i: int, data: bytes) -> None:
        self.run("UPDATE {t}entries SET data = ? WHERE idx = ?", data, i)

    def node(self, level: int, i: int) -> bytes:
        return bytes(self.run("SELECT hash FROM {t}nodes WHERE k = ?", node_key((level, i)))[0][0])

    def set_node(self, level: int, i: int, h: bytes) -> None:
        self.run("UPDATE {t}nodes SET hash = ? WHERE k = ?", h, node_key((level, i)))

    def close(self) -> None:
        self.conn.close()


def flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos % len(b)] ^= 0x20
    return bytes(b)


def change_entry(raw: Raw, i: int) -> None:
    raw.set_entry(i, flip(raw.entry(i), 7))


def delete_entry(raw: Raw, i: int) -> None:
    raw.run("DELETE FROM {t}entries WHERE idx = ?", i)


def swap_entries(raw: Raw, i: int) -> None:
    j = i + 1
    a, b = raw.entry(i), raw.entry(j)
    raw.set_entry(i, b)
    raw.set_entry(j, a)


def insert_entry(raw: Raw, i: int) -> None:
    raw.run("INSERT INTO {t}entries (idx, data) VALUES (?, ?)", N, raw.entry(i))


def insert_entry_mid_log(raw: Raw, i: int) -> None:
    forged = flip(raw.entry(i), 11)
    # Shift the tail up by one without tripping the primary key: via negative indexes.
    raw.run("UPDATE {t}entries SET idx = -idx - 1 WHERE idx >= ?", i)
    raw.run("UPDATE {t}entries SET idx = -idx WHERE idx < 0")
    raw.run("INSERT INTO {t}entries (idx, data) VALUES (?, ?)", i, forged)


def truncate_entries(raw: Raw, i: int) -> None:
    raw.run("DELETE FROM {t}entries WHERE idx >= ?", i)


def change_leaf_hash(raw: Raw, i: int) -> None:
    raw.set_node(0, i, flip(raw.node(0, i), 3))


def change_inner_node(raw: Raw, i: int) -> None:
    level = 1 + i % 5
    idx = (i >> level) % (N >> level)
    raw.set_node(level, idx, flip(raw.node(level, idx), 0))


def delete_node(raw: Raw, i: int) -> None:
    raw.run("DELETE FROM {t}nodes WHERE k = ?", node_key((1, (i // 2) % (N // 2))))


def insert_node(raw: Raw, i: int) -> None:
    raw.run("INSERT INTO {t}nodes (k, hash) VALUES (?, ?)", node_key((2, N // 4 + i)), bytes(32))


MUTATIONS: dict[str, tuple[Callable[[Raw, int], None], Callable[[int], str]]] = {
    "change entry": (change_entry, lambda i: f"entry {i}:"),
    "delete entry": (delete_entry, lambda i: f"entry {i} is missing"),
    "swap entries": (swap_entries, lambda i: f"entry {i}:"),
    "insert entry": (insert_entry, lambda i: f"entry {N} lies beyond"),
    "insert entry mid-log": (insert_entry_mid_log, lambda i: f"entry {i}:"),
    "truncate entries": (truncate_entries, lambda i: f"entry {i} is missing"),
    "change leaf hash": (change_leaf_hash, lambda i: f"entry {i}:"),
    "change inner node": (
        change_inner_node,
        lambda i: f"(level {1 + i % 5}, index {(i >> (1 + i % 5)) % (N >> (1 + i % 5))})",
    ),
    "delete node": (delete_node, lambda i: f"level 1, index {(i // 2) % (N // 2)}"),
    "insert node": (insert_node, lambda i: "level 2"),
}


def _build(logs: LogFactory) -> AuditLog:
    log = logs.open()
    log.append_many([make_event(i) for i in range(20)])
    for i in range(20, N):
        log.append(make_event(i))
    assert log.verify().ok
    return log


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_tampering_is_detected_and_located(logs: LogFactory, mutation: str) -> None:
    log = _build(logs)
    raw = Raw(logs, log)
    apply, expected = MUTATIONS[mutation]
    i = 11
    apply(raw, i)
    raw.close()
    report = log.verify()
    assert not report.ok
    assert report.problem is not None and expected(i) in report.problem, report.problem


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = LogFactory("sqlite", tmp_path_factory.mktemp("template"))
    _build(logs).close()
    return logs.home


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(mutation=st.sampled_from(sorted(MUTATIONS)), i=st.integers(0, N - 2))
def test_any_tampering_is_detected(
    template: Path, tmp_path_factory: pytest.TempPathFactory, mutation: str, i: int
) -> None:
    logs = LogFactory("sqlite", tmp_path_factory.mktemp("case"))
    shutil.copytree(template, logs.home)
    log = logs.open()
    raw = Raw(logs, log)
    apply, expected = MUTATIONS[mutation]
    apply(raw, i)
    raw.close()
    try:
        report = log.verify()
        assert not report.ok
        assert report.problem is not None and expected(i) in report.problem, report.problem
    finally:
        logs.cleanup()


def test_consistent_rewrite_is_caught_by_the_signed_checkpoints(logs: LogFactory) -> None:
    """Rewriting an entry AND every hash above it still contradicts the signed roots."""
    log = _build(logs)
    raw = Raw(logs, log)
    entries = [raw.entry(i) for i in range(N)]
    entries[5] = entries[5].replace(b"req-5", b"req-X")
    level = [leaf_hash(e) for e in entries]
    raw.set_entry(5, entries[5])
    lv = 0
    while len(level) > 0:
        for idx, h in enumerate(level):
            raw.set_node(lv, idx, h)
        if len(level) == 1:
            break
        level = [node_hash(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        lv += 1
    raw.close()
    report = log.verify()
    assert not report.ok and report.problem is not None
    assert "rewritten" in report.problem and report.bad_index is not None and report.bad_index <= 5


def test_forged_checkpoint_is_rejected(logs: LogFactory) -> None:
    log = _build(logs)
    raw = Raw(logs, log)
    forger = NoteSigner.generate(log.origin)  # right name, wrong key
    nodes = log.store.get_nodes(compact_range(N))
    root = fold_nodes([nodes[n] for n in compact_range(N)])
    for size, root_used in ((N, root), (N + 1, root), (N, bytes(32))):
        raw.run("DELETE FROM {t}checkpoints WHERE size = ?", size)
        note = sign_note(Checkpoint(log.origin, size, root_used).text(), forger)
        raw.run("INSERT INTO {t}checkpoints (size, note, signatures) VALUES (?, ?, 1)", size, note)
        report = log.verify()
        assert not report.ok and "not signed by any trusted key" in (report.problem or "")
        raw.run("DELETE FROM {t}checkpoints WHERE size = ?", size)
    # Even with the real key (a stolen key, or a buggy signer), a wrong root or size is caught.
    for size, root_used, expected in (
        (N, bytes(32), "were rewritten"),
        (N + 1, root, f"store claims {N} entries"),
    ):
        raw.run("DELETE FROM {t}checkpoints WHERE size = ?", size)
        note = sign_note(Checkpoint(log.origin, size, root_used).text(), log._signer)
        raw.run("INSERT INTO {t}checkpoints (size, note, signatures) VALUES (?, ?, 1)", size, note)
        report = log.verify()
        assert not report.ok and expected in (report.problem or ""), report.problem
        raw.run("DELETE FROM {t}checkpoints WHERE size = ?", size)
    raw.close()


def test_truncation_is_caught_against_a_held_checkpoint(logs: LogFactory) -> None:
    """Cutting entries, nodes and checkpoints consistently leaves a valid shorter log; only a
    checkpoint held outside the store (a receipt, a witness) exposes it."""
    log = _build(logs)
    held = log.checkpoint()
    raw = Raw(logs, log)
    raw.run("DELETE FROM {t}entries WHERE idx >= 30")
    for level in range(8):
        raw.run(
            "DELETE FROM {t}nodes WHERE k >= ? AND k < ?",
            node_key((level, 30 >> level)),
            node_key((level + 1, 0)),
        )
    raw.run("DELETE FROM {t}checkpoints WHERE size > 30")
    raw.run("UPDATE {t}meta SET value = '30' WHERE key = 'size'")
    note = sign_note(
        Checkpoint(
            log.origin, 30, fold_nodes([log.store.get_nodes([n])[n] for n in compact_range(30)])
        ).text(),
        log._signer,
    )
    raw.run("INSERT INTO {t}checkpoints (size, note, signatures) VALUES (30, ?, 1)", note)
    raw.close()
    assert log.verify().ok
    report = log.verify(anchor=held)
    assert not report.ok and "truncated" in (report.problem or "")


def test_editing_one_byte_of_the_sqlite_file_names_the_entry(sqlite_logs: LogFactory) -> None:
    log = _build(sqlite_logs)
    log.close()  # checkpoints the WAL into the main file
    path = sqlite_logs.home / "audit" / "log.sqlite"
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0
    data = bytearray(path.read_bytes())
    marker = b'"request_id":"req-23"'
    assert data.count(marker) == 1
    pos = data.index(marker) + len(marker) - 3
    data[pos] ^= 0x01  # "req-23" → "req-33"
    path.write_bytes(bytes(data))
    log = sqlite_logs.open()
    report = log.verify()
    assert not report.ok
    assert report.bad_index == 23 and "entry 23" in (report.problem or "")
