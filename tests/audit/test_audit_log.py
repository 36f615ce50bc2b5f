"""The audit log end to end, on SQLite and on PostgreSQL (the `logs` fixture runs both)."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sovra.audit import (
    AuditError,
    AuditLog,
    Receipt,
    ReceiptError,
    verify_checkpoint_update,
    verify_receipt,
)
from sovra.audit.keys import KeyRing
from sovra.audit.note import ALG_COSIGNATURE_V1, NoteSigner, add_signature, parse_note
from sovra.audit.store import SqliteStore
from sovra.audit.subjects import SubjectKeys
from tests.support.audit import EventMaker, LogFactory


def test_append_returns_receipts_that_verify(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    singles = [log.append(event(i)) for i in range(5)]
    batch = log.append_many([event(i) for i in range(5, 40)])
    receipts = singles + batch
    assert [r.index for r in receipts] == list(range(40))
    assert log.size == 40
    for r in receipts:
        result = verify_receipt(r.to_json(), log.public_key)
        assert result.index == r.index
        assert result.record is not None and result.record["request_id"] == f"req-{r.index}"
    report = log.verify()
    assert report.ok, report.problem
    assert report.size == 40


def test_receipt_verifies_offline_with_only_the_public_key(
    logs: LogFactory, event: EventMaker, tmp_path: Path
) -> None:
    log = logs.open()
    log.append_many([event(i) for i in range(10)])
    receipt = log.append(event(10))
    public_key = log.public_key
    log.close()
    # Nothing but the receipt text and the key string: no store, no data dir.
    result = verify_receipt(receipt.to_json(), public_key)
    assert (result.index, result.tree_size) == (10, 11)
    assert result.origin == public_key.split("+")[0]
    # Later receipts for the same entry (bigger trees) verify as well.
    later = logs.open()
    later.append_many([event(i) for i in range(11, 30)])
    assert verify_receipt(later.prove(10).to_json(), public_key).tree_size == 30
    tlog = receipt.to_tlog_proof()
    assert tlog.startswith("c2sp.org/tlog-proof@v1\nextra ") and "\nindex 10\n" in tlog


def _mutate(receipt: Receipt, **changes: object) -> str:
    data = receipt.to_dict()
    data.update(changes)
    return json.dumps(data)


def test_bad_receipts_are_rejected(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    log.append_many([event(i) for i in range(12)])
    receipt = log.prove(5)
    good = receipt.to_dict()
    key = log.public_key
    flipped = bytearray(receipt.proof[0])
    flipped[0] ^= 1
    other_entry = base64.b64encode(log.prove(6).entry or b"").decode()
    cases = {
        "not json": "{not json",
        "not an object": "[1, 2]",
        "wrong format": _mutate(receipt, format="something/else"),
        "bad base64": _mutate(receipt, leaf_hash="***"),
        "negative index": _mutate(receipt, index=-1),
        "wrong index": _mutate(receipt, index=6),
        "proof hash flipped": _mutate(
            receipt,
            inclusion_proof=[
                base64.b64encode(bytes(flipped)).decode(),
                *good["inclusion_proof"][1:],
            ],
        ),
        "proof truncated": _mutate(receipt, inclusion_proof=good["inclusion_proof"][:-1]),
        "entry swapped": _mutate(receipt, entry=other_entry),
        "checkpoint size edited": _mutate(
            receipt, checkpoint=receipt.checkpoint.replace("\n12\n", "\n13\n", 1)
        ),
        "checkpoint unsigned": _mutate(receipt, checkpoint=parse_note(receipt.checkpoint).text),
    }
    for name, text in cases.items():
        with pytest.raises(ReceiptError):
            verify_receipt(text, key)
            pytest.fail(f"accepted a receipt with: {name}")
    verify_receipt(json.dumps(good), key)


def test_receipt_with_wrong_key_or_wrong_log_is_rejected(
    logs: LogFactory, event: EventMaker, tmp_path: Path
) -> None:
    log = logs.open()
    receipt = log.append(event(0))
    stranger = AuditLog.open(tmp_path / "other-home")
    try:
        foreign = stranger.append(event(0))
        with pytest.raises(ReceiptError, match="not signed by any trusted key"):
            verify_receipt(receipt.to_json(), stranger.public_key)
        with pytest.raises(ReceiptError, match="not signed by any trusted key"):
            verify_receipt(foreign.to_json(), log.public_key)
        with pytest.raises(ReceiptError, match="expected"):
            verify_receipt(receipt.to_json(), log.public_key, origin=stranger.origin)
        # Same key material under another log name is another key: rejected.
        impostor = NoteSigner(stranger.origin, log._signer.private)
        with pytest.raises(ReceiptError):
            verify_receipt(receipt.to_json(), str(impostor.verifier))
    finally:
        stranger.close()


def test_consistency_between_checkpoints(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    notes = []
    for n in (1, 3, 4, 9, 17):
        log.append_many([event(i) for i in range(log.size, n)])
        notes.append(log.checkpoint())
    for i, old in enumerate(notes):
        for new in notes[i:]:
            size1 = int(old.split("\n")[1])
            size2 = int(new.split("\n")[1])
            proof = log.prove_consistency(size1, size2)
            verify_checkpoint_update(old, new, proof, log.public_key)
    with pytest.raises(ReceiptError):
        verify_checkpoint_update(notes[1], notes[3], log.prove_consistency(4, 9), log.public_key)
    with pytest.raises(AuditError):
        log.prove_consistency(5, 100)


class SplitViewStore:
    """A malicious store: the same log, but reader "b" is shown a forked history."""

    def __init__(self, a: SqliteStore, b: SqliteStore) -> None:
        self.views = {"a": a, "b": b}
        self.reader = "both"

    def __getattr__(self, name: str) -> object:
        if self.reader == "both" and name == "append":

            def append_both(entries: list[bytes], plan: object) -> int:
                self.views["b"].append(entries, plan)  # type: ignore[arg-type]
                return self.views["a"].append(entries, plan)  # type: ignore[arg-type]

            return append_both
        return getattr(self.views["a" if self.reader == "both" else self.reader], name)


def test_split_view_is_caught_by_consistency_proofs(tmp_path: Path, event: EventMaker) -> None:
    store = SplitViewStore(SqliteStore(tmp_path / "a.sqlite"), SqliteStore(tmp_path / "b.sqlite"))
    keys = tmp_path / "home" / "audit"
    log = AuditLog(store, KeyRing(keys / "keys"), SubjectKeys(keys / "subjects"), 183)  # type: ignore[arg-type]
    log.append_many([event(i) for i in range(6)])
    store.reader = "a"
    log.append(event(6, details={"view": "a"}))
    seen_by_alice = log.checkpoint()
    store.reader = "b"
    log.append_many([event(6, details={"view": "b"}), event(7)])
    shown_to_bob = log.checkpoint()
    # Each view is internally valid and signed by the real key...
    assert log.verify().ok
    store.reader = "a"
    assert log.verify().ok
    # ...but Alice, holding her checkpoint, cannot be moved to Bob's tree.
    store.reader = "b"
    proof = log.prove_consistency(7, 8)
    with pytest.raises(ReceiptError, match="does not extend"):
        verify_checkpoint_update(seen_by_alice, shown_to_bob, proof, log.public_key)
    store.reader = "a"
    with pytest.raises(AuditError):
        log.prove_consistency(7, 8)
    log.close()
    store.views["b"].close()


def test_key_rotation_keeps_old_checkpoints_verifiable(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    before = log.append_many([event(i) for i in range(4)])
    old_key = log.public_key
    new_key = log.rotate_key()
    assert new_key != old_key
    assert log.public_keys() == [old_key, new_key]
    after = log.append(event(4))
    verify_receipt(before[0].to_json(), old_key)
    with pytest.raises(ReceiptError):
        verify_receipt(before[0].to_json(), new_key)
    verify_receipt(after.to_json(), new_key)
    with pytest.raises(ReceiptError):
        verify_receipt(after.to_json(), old_key)
    # Trusting the whole key history accepts both.
    verify_receipt(before[0].to_json(), log.public_keys())
    assert log.verify().ok
    log.close()
    reopened = logs.open()
    assert reopened.public_key == new_key
    assert reopened.verify().ok
    # The old private key is gone from disk; only its public key remains trusted.
    on_disk = NoteSigner.from_private_string(reopened.keyring.key_path.read_text())
    assert str(on_disk.verifier) == new_key != old_key


def test_witness_cosignatures(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    log.append_many([event(i) for i in range(3)])
    witness = NoteSigner.generate("witness.example/w1", ALG_COSIGNATURE_V1)
    rogue = NoteSigner.generate("witness.example/rogue", ALG_COSIGNATURE_V1)
    note = log.checkpoint()
    with pytest.raises(AuditError, match="witness"):
        log.add_cosignature(add_signature(note, witness))  # not yet a configured witness
    log.keyring.add_witness(str(witness.verifier))
    stored = log.add_cosignature(add_signature(note, witness))
    assert len(parse_note(stored).signatures) == 2
    with pytest.raises(AuditError):
        log.add_cosignature(add_signature(note, rogue))
    receipt = log.prove(1)
    result = verify_receipt(
        receipt.to_json(), log.public_key, witnesses=[str(witness.verifier)], min_witnesses=1
    )
    assert result.witnesses == [str(witness.verifier)]
    with pytest.raises(ReceiptError, match="witness"):
        verify_receipt(
            receipt.to_json(), log.public_key, witnesses=[str(rogue.verifier)], min_witnesses=1
        )
    # A cosignature survives further appends (cosigned checkpoints are never pruned).
    log.append(event(3))
    assert len(parse_note(log.store.checkpoint_at(3) or "").signatures) == 2
    assert log.verify().ok
    # A stored cosignature that no longer verifies fails the log's verification.
    witness_line = stored.strip().split("\n")[-1]
    sig = base64.b64decode(witness_line.split(" ")[-1])
    broken = sig[:4] + sig[4:12] + bytes(64)  # key id, timestamp, zeroed signature
    forged = stored.replace(witness_line.split(" ")[-1], base64.b64encode(broken).decode())
    log.store.put_checkpoint(3, forged)
    report = log.verify()
    assert not report.ok and "checkpoint at size 3" in (report.problem or "")


def _files_text(home: Path) -> bytes:
    blobs = []
    for path in home.rglob("*"):
        if path.is_file():
            blobs.append(path.read_bytes())
    return b"\n".join(blobs)


def test_erasure_shreds_personal_data_and_keeps_proofs(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    secret = "Zelda Quist salary review 2026"
    receipts = [
        log.append(
            event(i, actor="user:zquist", subject="zquist", personal={"query": f"{secret} #{i}"})
        )
        for i in range(3)
    ]
    other = log.append(
        event(3, actor="user:bob", subject="bob", personal={"query": "bob's question"})
    )
    shown = [e.view for e in log.events(actor="user:zquist")]
    assert [v["personal"]["query"] for v in shown] == [f"{secret} #{i}" for i in range(3)]
    # Personal data never reaches disk in clear, before or after erasure.
    assert b"zquist" not in _files_text(logs.home) and b"Zelda" not in _files_text(logs.home)

    erasure = log.erase_subject("zquist")
    log.close()
    log = logs.open()
    assert log.verify().ok
    views = {e.index: e.view for e in log.events()}
    for r in receipts:
        assert views[r.index]["actor"] == "erased" and views[r.index]["personal"] == "erased"
        verify_receipt(r.to_json(), log.public_key)  # old receipts still prove inclusion
    assert views[other.index]["personal"] == {"query": "bob's question"}
    assert views[erasure.index]["action"] == "erase"
    assert views[erasure.index]["details"]["subject"] == views[receipts[0].index]["subject"]
    assert list(log.events(actor="user:zquist")) == []
    text = _files_text(logs.home)
    assert b"zquist" not in text and b"Zelda" not in text and b"salary" not in text
    if logs.kind == "postgres":
        rows = [
            bytes(d)
            for (d,) in log.store._conn.execute(  # type: ignore[attr-defined]
                f"SELECT data FROM {logs.schema}.entries"
            )
        ]
        assert not any(b"zquist" in d or b"Zelda" in d for d in rows)
    with pytest.raises(AuditError, match="already erased"):
        log.erase_subject("zquist")


def test_concurrent_appends_are_group_committed(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    results: list[Receipt] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(15):
            r = log.append(event(t * 100 + i))
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(r.index for r in results) == list(range(120))
    for r in results[::7]:
        verify_receipt(r.to_json(), log.public_key)
    assert log.verify().ok


def test_retention_cannot_go_below_six_months(
    logs: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AuditError, match="183 days"):
        logs.open(retention_days=90)
    monkeypatch.setenv("SOVRA_AUDIT_RETENTION_DAYS", "30")
    with pytest.raises(AuditError, match="minimum"):
        logs.open()
    monkeypatch.setenv("SOVRA_AUDIT_RETENTION_DAYS", "six months")
    with pytest.raises(AuditError, match="whole number"):
        logs.open()
    monkeypatch.delenv("SOVRA_AUDIT_RETENTION_DAYS")
    log = logs.open(retention_days=400)
    assert log.retention_days == 400
    log.close()
    # A log never lowers the retention it was created with; raising it sticks.
    assert logs.open(retention_days=183).retention_days == 400
    logs.open(retention_days=500).close()
    assert logs.open().retention_days == 500


def test_event_filters(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    old = datetime(2026, 1, 1, tzinfo=UTC)
    log.append(event(0, time=old, actor="user:ann", action="search"))
    log.append(event(1, time=old + timedelta(days=10), actor="user:ben", action="ask"))
    log.append(event(2, time=old + timedelta(days=20), actor="user:ann", action="ask"))
    assert [e.index for e in log.events(actor="user:ann")] == [0, 2]
    assert [e.index for e in log.events(action="ask")] == [1, 2]
    assert [e.index for e in log.events(since=old + timedelta(days=5))] == [1, 2]
    assert [e.index for e in log.events(since=old + timedelta(days=5), actor="user:ann")] == [2]


def test_key_file_is_private_and_checked(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    log.append(event(0))
    path = log.keyring.key_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    log.close()
    path.chmod(0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        logs.open()
    path.chmod(0o600)
    assert logs.open().verify().ok


def test_signing_key_from_env_path(
    logs: LogFactory, event: EventMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path = tmp_path / "secrets" / "audit.key"
    monkeypatch.setenv("SOVRA_AUDIT_KEY", str(key_path))
    log = logs.open()
    log.append(event(0))
    assert key_path.exists() and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not (logs.home / "audit" / "keys" / "log.key").exists()
    assert NoteSigner.from_private_string(key_path.read_text()).name == log.origin


def test_reopen_continues_the_same_log(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    log.append_many([event(i) for i in range(7)])
    origin, key = log.origin, log.public_key
    log.close()
    log = logs.open()
    assert (log.origin, log.public_key, log.size) == (origin, key, 7)
    r = log.append(event(7))
    assert r.index == 7
    assert log.verify().ok
    assert os.path.exists(logs.home / "audit" / "keys" / "trusted.vkeys")


def test_empty_log(logs: LogFactory) -> None:
    log = logs.open()
    assert log.verify().ok
    note = log.checkpoint()
    assert note.split("\n")[1] == "0"
    with pytest.raises(AuditError, match="empty"):
        log.prove(0)
    assert log.verify().ok


def test_submitted_events_are_batched_and_acknowledged_after_commit(
    logs: LogFactory, event: EventMaker
) -> None:
    log = logs.open()
    commits: list[int] = []
    real_commit = log._commit

    def counting_commit(entries: list[bytes]) -> object:
        commits.append(len(entries))
        return real_commit(entries)

    log._commit = counting_commit  # type: ignore[assignment,method-assign]
    futures = [log.submit(event(i)) for i in range(300)]
    receipts = [f.result(timeout=60) for f in futures]
    assert [r.index for r in receipts] == list(range(300))
    assert sum(commits) == 300 and len(commits) < 300  # group commit happened
    log.flush()
    assert log.size == 300 and log.verify().ok


def test_one_committer_thread_serves_steady_appends_and_ends_with_the_log(
    sqlite_logs: LogFactory, event: EventMaker
) -> None:
    """Events one after another reuse the lingering committer instead of a thread each; an
    idle log's committer exits on close, so closed logs leave no threads behind."""
    log = sqlite_logs.open()
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        if self.name == "sovra-audit-commit":
            started.append(self)
        real_start(self)

    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        receipts = [log.append(event(i)) for i in range(50)]
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert [r.index for r in receipts] == list(range(50))
    assert len(started) == 1, len(started)
    log.flush()  # returns although the committer lingers: nothing is pending
    log.close()
    started[0].join(timeout=10)
    assert not started[0].is_alive()


def test_a_failed_commit_fails_its_callers_and_the_log_goes_on(
    logs: LogFactory, event: EventMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = logs.open()
    log.append(event(0))

    def broken(entries: object, plan: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(log.store, "append", broken)
    with pytest.raises(OSError, match="disk full"):
        log.append(event(1))
    monkeypatch.undo()
    assert log.append(event(2)).index == 1
    assert log.verify().ok


def test_receipt_inside_a_saved_answer_verifies(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    receipt = log.append(event(0))
    answer = {"answer": "42", "citations": [], "receipt": receipt.to_dict()}
    assert verify_receipt(json.dumps(answer), log.public_key).index == 0
    with pytest.raises(ReceiptError):
        verify_receipt(json.dumps({"answer": "42"}), log.public_key)


def test_data_files_are_owner_only(sqlite_logs: LogFactory, event: EventMaker) -> None:
    log = sqlite_logs.open()
    log.append(event(0, subject="ann", personal={"q": "x"}))
    log.close()
    audit = sqlite_logs.home / "audit"
    for path in audit.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_tiles_follow_the_tlog_tiles_layout(sqlite_logs: LogFactory, event: EventMaker) -> None:
    from sovra.audit.merkle import leaf_hash, root_of_leaf_hashes

    log = sqlite_logs.open()
    log.append_many([event(i) for i in range(600)])
    full = log.tile(0, 0)
    partial = log.tile(0, 2)
    assert len(full) == 256 * 32 and len(partial) == (600 - 512) * 32
    entries = [e.entry for e in log.events()]
    assert full[:32] == leaf_hash(entries[0])
    # A level-1 tile hash is the Merkle root of a full level-0 tile.
    level1 = log.tile(1, 0)
    assert len(level1) == 2 * 32
    hashes = [full[i : i + 32] for i in range(0, len(full), 32)]
    assert level1[:32] == root_of_leaf_hashes(hashes)
    with pytest.raises(AuditError):
        log.tile(0, 3)


def test_read_only_needs_no_signing_key(logs: LogFactory, event: EventMaker) -> None:
    log = logs.open()
    log.append_many([event(i) for i in range(5)])
    key = log.public_key
    log.close()
    log.keyring.key_path.unlink()  # an auditor's copy: public keys only
    with pytest.raises(AuditError, match=r"signing key .* is missing"):
        logs.open()
    ro = logs.open(read_only=True)
    assert ro.verify().ok
    assert verify_receipt(ro.prove(3).to_json(), key).index == 3
    assert ro.public_key == key
    assert [e.index for e in ro.events()] == list(range(5))
    assert ro.checkpoint().split("\n")[1] == "5"
    for write in (lambda: ro.append(event(5)), lambda: ro.append_many([event(5)]), ro.rotate_key):
        with pytest.raises(AuditError, match="read-only"):
            write()
    assert ro.size == 5


def test_read_only_open_of_nothing_is_an_error(logs: LogFactory) -> None:
    with pytest.raises(AuditError, match="no audit log"):
        logs.open(read_only=True)
