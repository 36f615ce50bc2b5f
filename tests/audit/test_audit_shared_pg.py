"""Several replicas on one PostgreSQL audit log: shared subject keys, one signing key, reconnect.

Against the real server ($SOVRA_TEST_POSTGRES_URL), a fresh schema per test, dropped after.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sovra.audit import AuditError, AuditLog
from sovra.audit.keys import KEY_ENV, write_secret_file
from sovra.audit.note import NoteSigner
from sovra.audit.subjects import DIGEST_KEY, Digests, SubjectKeys
from tests.support.audit import LogFactory, make_event


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[LogFactory]:
    factory = LogFactory("postgres", tmp_path)
    yield factory
    factory.cleanup()


def _replica(pg: LogFactory, tmp_path: Path, name: str, key: Path | None = None) -> AuditLog:
    """A log opened from its own data dir (another host), on the shared schema."""
    log = AuditLog.open(tmp_path / name, pg.url, schema=pg.schema, key_path=key)
    pg._opened.append(log)
    return log


def test_two_subject_key_stores_agree(pg: LogFactory) -> None:
    assert pg.url is not None
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {pg.schema}")
    a, b = (SubjectKeys.shared(pg.url, pg.schema) for _ in range(2))
    first = a.get_or_create("alice")
    assert b.get_or_create("alice") == first
    assert b.pseudonym("alice") == first[0] and b.key_for(first[0]) == first[1]
    assert a.get_or_create("bob") != first
    # The subject id is never stored in clear.
    with psycopg.connect(pg.url, autocommit=True) as conn:
        dump = repr(conn.execute(f"SELECT * FROM {pg.schema}.subject_keys").fetchall())
    assert "alice" not in dump and "bob" not in dump


def test_replicas_digest_alike_from_the_first_ones_key(pg: LogFactory, tmp_path: Path) -> None:
    """An approval binds a keyed digest of what approvers saw; a replica with another key
    would never count a vote. The first replica's own key seeds the shared one, so digests it
    made before sharing still match; a later replica's own file is not used."""
    assert pg.url is not None
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {pg.schema}")
    home_a, home_b, home_c = (tmp_path / n for n in ("a", "b", "c"))
    for home in (home_a, home_b, home_c):
        home.mkdir()
    before = Digests.in_home(home_a).of("inputs")
    Digests.in_home(home_b)  # b has a key of its own, which must lose
    stores = [SubjectKeys.shared(pg.url, pg.schema) for _ in range(3)]
    try:
        digests = [s.digests(h) for s, h in zip(stores, (home_a, home_b, home_c), strict=True)]
        assert {d.of("inputs") for d in digests} == {before}
        assert Digests.in_home(home_b).of("inputs") != before
        assert not (home_c / DIGEST_KEY).exists()  # nothing written to a replica's home
    finally:
        for s in stores:
            s.close()


def test_concurrent_creation_gives_one_key(pg: LogFactory) -> None:
    assert pg.url is not None
    SubjectKeys.shared(pg.url, pg.schema)  # tables exist; the race is on the subject row
    stores = [SubjectKeys.shared(pg.url, pg.schema) for _ in range(8)]
    start = threading.Barrier(len(stores))
    got: list[tuple[str, bytes]] = []

    def create(keys: SubjectKeys) -> None:
        start.wait()
        for i in range(20):
            pair = keys.get_or_create(f"subject-{i}")
            if i == 7:
                got.append(pair)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(stores) and len(set(got)) == 1
    with psycopg.connect(pg.url, autocommit=True) as conn:
        count = conn.execute(f"SELECT count(*) FROM {pg.schema}.subject_keys").fetchone()
    assert count == (20,)


def test_erasure_on_one_replica_reaches_the_other(pg: LogFactory, tmp_path: Path) -> None:
    key = tmp_path / "shared.key"
    a = _replica(pg, tmp_path, "a", key)
    b = _replica(pg, tmp_path, "b", key)
    receipt = a.append(make_event(1, subject="zoe", personal={"query": "zoe's question"}))
    view = next(b.events(start=receipt.index)).view
    assert view["personal"] == {"query": "zoe's question"}
    b.erase_subject("zoe")
    assert a.subjects.key_for(view["subject"]) is None
    assert next(a.events(start=receipt.index)).view["personal"] == "erased"
    with psycopg.connect(pg.url or "", autocommit=True) as conn:
        left = conn.execute(f"SELECT count(*) FROM {pg.schema}.subject_keys").fetchone()
    assert left == (0,)
    assert a.verify().ok and b.verify().ok


def test_a_replica_with_another_signing_key_is_refused(pg: LogFactory, tmp_path: Path) -> None:
    key = tmp_path / "shared.key"
    a = _replica(pg, tmp_path, "a", key)
    a.append(make_event(1))
    other = tmp_path / "other.key"  # a valid key for this log, but not the one it signs with
    write_secret_file(other, NoteSigner.generate(a.origin).to_private_string() + "\n")
    with pytest.raises(AuditError) as err:
        _replica(pg, tmp_path, "b", other)
    message = str(err.value)
    expected = "+".join(a.public_key.split("+")[:2])
    found = "+".join(str(NoteSigner.from_private_string(other.read_text()).verifier).split("+")[:2])
    assert expected in message and found in message and str(other) in message
    assert KEY_ENV in message and "[audit] key_path" in message
    # The same key file is accepted, and what it writes verifies.
    b = _replica(pg, tmp_path, "b", key)
    b.append(make_event(2))
    assert a.verify().ok


def test_rotation_moves_the_shared_key(pg: LogFactory, tmp_path: Path) -> None:
    key = tmp_path / "shared.key"
    a = _replica(pg, tmp_path, "a", key)
    a.append(make_event(1))
    old = key.read_text()
    new_public = a.rotate_key()
    a.append(make_event(2))
    assert a.verify().ok
    # A replica still holding the old key is refused; with the new one it opens.
    stale = tmp_path / "stale.key"
    stale.write_text(old)
    stale.chmod(0o600)
    with pytest.raises(AuditError, match="is signed by key"):
        _replica(pg, tmp_path, "b", stale)
    assert _replica(pg, tmp_path, "c", key).public_key == new_public


def _terminate(pg: LogFactory, schema: str) -> int:
    """pg_terminate_backend every session but ours that holds the test schema's log open."""
    with psycopg.connect(pg.url or "", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database() "
            "AND application_name = %s",
            (schema,),
        ).fetchall()
    return len(rows)


def test_append_after_the_connection_is_killed(
    pg: LogFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tag the store's connection so the test kills exactly it.
    monkeypatch.setenv("PGAPPNAME", pg.schema)
    log = pg.open()
    log.append(make_event(0, subject="ann", personal={"q": "x"}))
    for round_ in range(3):
        assert _terminate(pg, pg.schema) >= 1
        receipt = log.append(make_event(round_ + 1))
        assert receipt.index == round_ + 1
        assert _terminate(pg, pg.schema) >= 1
        assert log.size == round_ + 2  # a read reconnects too
    assert [e.index for e in log.events()] == [0, 1, 2, 3]
    report = log.verify()
    assert report.ok and report.size == 4


def test_a_commit_whose_answer_was_lost_is_not_written_twice(
    pg: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = pg.open()
    log.append(make_event(0))
    store = log.store
    real = store._append  # type: ignore[attr-defined]
    calls: list[int] = []

    def answer_lost(entries: object, plan: object, committing: list[int]) -> int:
        size: int = real(entries, plan, committing)
        calls.append(size)
        if len(calls) == 1:  # committed on the server, but the client never heard back
            store._conn.close()  # type: ignore[attr-defined]
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return size

    monkeypatch.setattr(store, "_append", answer_lost)
    receipt = log.append(make_event(1))
    assert receipt.index == 1 and calls == [1]
    assert log.size == 2
    assert log.verify().ok


def test_replicas_starting_together_on_a_fresh_database(pg: LogFactory, tmp_path: Path) -> None:
    key = tmp_path / "shared.key"
    start = threading.Barrier(4)
    logs: list[AuditLog] = []
    errors: list[BaseException] = []

    def boot(n: int) -> None:
        start.wait()
        try:
            log = _replica(pg, tmp_path, f"r{n}", key)
            logs.append(log)
            log.append(make_event(n, subject="sam", personal={"q": f"from {n}"}))
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({log.origin for log in logs}) == 1
    assert len({log.subjects.get_or_create("sam") for log in logs}) == 1
    views = [e.view for e in logs[0].events()]
    assert sorted(v["personal"]["q"] for v in views) == [f"from {n}" for n in range(4)]
    assert logs[0].verify().ok
