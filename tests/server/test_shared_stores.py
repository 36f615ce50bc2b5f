"""The server's shared stores on both backends: two store objects over one database stand for
two replicas (the two-process test is tests/server/test_two_replicas.py), and a home's SQLite
files from before SQLAlchemy keep working."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovra.server.accounts import AccountStore
from tests.support.shared_db import fresh_database


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database("sovra_stores") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return tmp_path / "server" / "accounts.sqlite"


def test_session_made_by_one_replica_works_on_the_other(target: str | Path) -> None:
    one, two = AccountStore(target), AccountStore(target)
    token, _ = one.create_session("alice", 60)
    seen = two.session(token)
    assert seen is not None and seen.user_id == "alice"
    one.end_session(token)
    assert two.session(token) is None


def test_key_revoked_on_one_replica_is_refused_by_the_other(target: str | Path) -> None:
    one, two = AccountStore(target), AccountStore(target)
    secret, key = one.create_key("bob", "ci")
    assert two.authenticate_key(secret) is not None  # `two` caches the argon2 verification
    one.revoke_key(key.id)
    assert two.authenticate_key(secret) is None
    assert [k.id for k in two.keys("bob") if k.revoked_at is not None] == [key.id]


def test_password_and_erasure_on_both_backends(target: str | Path) -> None:
    one, two = AccountStore(target), AccountStore(target)
    one.set_password("carol", "correct horse")
    assert two.check_password("carol", "correct horse")
    assert not two.check_password("carol", "wrong horse!")
    two.create_session("carol", 60)
    one.create_key("carol", "k")
    assert two.erase_user("carol") == 3
    assert not one.has_password("carol") and one.keys("carol") == []


# Today's (pre-SQLAlchemy) schema of server/accounts.sqlite, before IdP sign-in added columns.
_OLD_SCHEMA = """
CREATE TABLE passwords (user_id TEXT PRIMARY KEY, hash TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL,
    scopes TEXT NOT NULL, created_at REAL NOT NULL, last_used_at REAL, revoked_at REAL);
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY, user_id TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL);
"""


def test_an_existing_accounts_file_keeps_working(tmp_path: Path) -> None:
    import hashlib
    import time

    from argon2 import PasswordHasher

    path = tmp_path / "server" / "accounts.sqlite"
    path.parent.mkdir()
    secret = "sovra_abc123_" + "s" * 43
    with sqlite3.connect(path) as db:
        db.executescript(_OLD_SCHEMA)
        db.execute(
            "INSERT INTO api_keys VALUES ('abc123','dave','old',?,'search ask',?,NULL,NULL)",
            (PasswordHasher().hash(secret), time.time()),
        )
        token = "old-session-token"
        db.execute(
            "INSERT INTO sessions VALUES (?, 'dave', 'csrf', ?, ?)",
            (hashlib.sha256(token.encode()).hexdigest(), time.time(), time.time() + 60),
        )
    store = AccountStore(path)
    key = store.authenticate_key(secret)
    assert key is not None and key.user_id == "dave" and key.scopes == ("search", "ask")
    session = store.session(token)
    assert session is not None and session.user_id == "dave" and session.groups is None
    new, _ = store.create_session("dave", 60, groups=("staff",), idp_token="t")
    assert store.session(new) is not None


def test_rate_limit_is_one_bucket_for_every_replica(target: str | Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sovra.server.auth import RateLimiter

    engine = AccountStore(target).engine
    # Two replicas' limiters (one refill a minute: none during the test), racing threads each.
    one = RateLimiter(1, 10, AccountStore(target).engine)
    two = RateLimiter(1, 10, engine)
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda i: (one if i % 2 else two).check("p:erin"), range(40)))
    assert sum(1 for w in waits if w == 0) == 10, "exactly the burst, across both replicas"
    assert all(30 < w <= 60 for w in waits if w), "the wait until one token refills"
    assert one.check("p:frank") == 0, "another key has its own bucket"
    login = RateLimiter(1, 10, engine, scope="login")
    assert login.check("p:erin") == 0, "another scope has its own bucket"


def test_a_sign_in_started_on_one_replica_finishes_on_the_other(target: str | Path) -> None:
    import time

    from sovra.server.oidc import PENDING_TTL_S, Pending, PendingLogins

    one = PendingLogins(AccountStore(target).engine)
    two = PendingLogins(AccountStore(target).engine)
    started = Pending("nonce", "verifier", "https://sovra/cb", "/ask", time.time())
    one.add("state-1", started)
    assert two.take("state-1") == started
    assert one.take("state-1") is None, "a state is good for one callback"
    one.add("state-2", Pending("n", "v", "r", "/", time.time() - PENDING_TTL_S - 1))
    assert two.take("state-2") is None, "expired"
    with AccountStore(target).engine.connect() as db:
        stored = db.exec_driver_sql(
            "SELECT state_sha256 FROM "
            + ("sovra_accounts." if isinstance(target, str) else "")
            + "oidc_pending"
        ).all()
    assert all("state" not in row[0] for row in stored), "the state itself is not stored"


def _state_target(target: str | Path) -> str | Path:
    return target if isinstance(target, str) else target.parent.parent / "state.db"


def test_sync_state_is_shared(target: str | Path) -> None:
    from sovra.ingest import StateStore

    one, two = StateStore(_state_target(target)), StateStore(_state_target(target))
    one.record_ok("files", [("a", "v1", 3), ("b", "v1", 2)], pipeline="p")
    one.record_failed("files", [("c", "v1", "bad pdf")])
    one.record_failed("files", [("d", "v1", "redirect page")], status="skipped")
    one.record_ok("files", [("a", "v2", 4)], pipeline="p")  # replaces, never doubles
    assert two.versions("files")["a"] == ("v2", "ok", "p")
    assert two.counts("files") == {"ok": 2, "failed": 1, "skipped": 1, "chunks": 6}
    two.save_report("files", {"added": 2})
    assert one.last_report("files") == {"added": 2}
    assert "files" in one.sources()
    one.forget("files", ["b"])
    assert [d.external_id for d in two.documents("files")] == ["a", "c", "d"]


def test_usage_ledger_is_shared(target: str | Path) -> None:
    from sovra.config import EndpointConfig
    from sovra.domain import Principal
    from sovra.policy.usage import UsageLedger

    home = target.parent.parent if isinstance(target, Path) else Path("/nonexistent")
    url = target if isinstance(target, str) else None
    one, two = UsageLedger.in_home(home, url), UsageLedger.in_home(home, url)
    ep = EndpointConfig(
        name="local", kind="embedded", model="m", jurisdiction="eu", cost_per_1k_tokens=1.0
    )
    before = two.totals()[0]
    one.record(
        Principal("gina", frozenset({"staff"})), ep, tokens_in=500, tokens_out=500, latency_ms=3.0
    )
    assert two.totals()[0] == before + 1
    assert any(r.key == "staff" for r in two.report("group"))
    assert one.erase_principal("gina") == 1
    assert not any(r.key == "gina" for r in two.report("user"))


def test_an_existing_state_file_keeps_working(tmp_path: Path) -> None:
    from sovra.ingest import StateStore

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:  # the schema before the `pipeline` column
        db.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema', '1');
            CREATE TABLE documents (source TEXT NOT NULL, external_id TEXT NOT NULL,
                version TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
                error TEXT, chunk_count INTEGER NOT NULL DEFAULT 0, synced_at TEXT NOT NULL,
                PRIMARY KEY (source, external_id)) WITHOUT ROWID;
            CREATE TABLE reports (source TEXT PRIMARY KEY, finished_at TEXT NOT NULL,
                report TEXT NOT NULL);
            INSERT INTO documents VALUES ('files', 'a', 'v1', 'ok', NULL, 3,
                '2026-01-01T00:00:00.000+00:00');
            """
        )
    store = StateStore(path)
    assert store.versions("files") == {"a": ("v1", "ok", "")}
    store.record_ok("files", [("a", "v2", 1)], pipeline="p")
    assert store.versions("files") == {"a": ("v2", "ok", "p")}


def test_answer_feedback_is_shared(target: str | Path) -> None:
    from sovra.answer.feedback import FeedbackStore

    home = target.parent.parent if isinstance(target, Path) else Path("/nonexistent")
    url = target if isinstance(target, str) else None
    one, two = FeedbackStore.in_home(home, url), FeedbackStore.in_home(home, url)
    first = one.add("hana", 7, "up", "clear answer")
    two.add("ivan", 7, "down", "")
    assert next((r["id"], r["user_id"]) for r in two.for_answer(7)) == (first, "hana")
    totals = {r["key"]: (r["up"], r["down"], r["comments"]) for r in one.summary(by_user=True)}
    assert totals["hana"] == (1, 0, 1) and totals["ivan"] == (0, 1, 0)
    assert two.erase_user("hana", "erased:x") == 1
    assert next((r["user_id"], r["comment"]) for r in one.for_answer(7)) == ("erased:x", "")


def test_recent_questions_are_shared(target: str | Path) -> None:
    from sovra.answer.recent import RecentQuestions

    home = target.parent.parent if isinstance(target, Path) else Path("/nonexistent")
    url = target if isinstance(target, str) else None
    one = RecentQuestions.in_home(home, url)
    two = RecentQuestions(url if url is not None else home / "recent-questions.sqlite", keep=2)
    two.add("jo", "q1")
    one.add("jo", "q2")
    two.add("jo", "q3")  # keep=2: q1 goes
    one.add("kim", "other")
    assert one.of_user("jo") == ["q3", "q2"]
    assert two.erase_user("jo") == 2
    assert one.of_user("jo") == [] and two.of_user("kim") == ["other"]


def test_query_vector_log_is_shared(target: str | Path) -> None:
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from sovra.search.query_log import QueryVectorLog

    home = target.parent.parent if isinstance(target, Path) else Path("/nonexistent")
    url = target if isinstance(target, str) else None
    one = QueryVectorLog.in_home(home, retention_days=1, engine=url)
    two = QueryVectorLog.in_home(home, retention_days=1, engine=url)
    now = datetime.now(UTC)
    one.add("search", "m", np.ones(4), time=now - timedelta(days=3))
    one.flush()  # adds are buffered for up to a second (query_log.FLUSH_S)
    two.add("ask", "m", np.arange(4.0), time=now)
    two.flush()  # prunes the 3-day-old row of `one`
    got = one.vectors(now - timedelta(days=5), now + timedelta(seconds=1), model="m")
    assert got.shape == (1, 4) and got[0].tolist() == [0.0, 1.0, 2.0, 3.0]
