"""Two real `sovra serve` processes over one PostgreSQL database (issue 18 §2): what one replica
writes — sessions, API keys and their revocation, rate-limit buckets, flow approvals — the other
sees on its next request, and killing one (-9) under load costs the other nothing.

One synced home, copied per replica (the embedded index is per replica by nature); both
replicas read the same `sovra.toml` text except `home`, with `[workspace] database_url` naming
an environment variable that holds a fresh database's URL (dropped afterwards)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sovra.config import load_config
from sovra.server.accounts import AccountStore
from tests.support.demo_site import SERVER_FILES, sync_site, write_site
from tests.support.flows import ACCESS_WORKFLOW as WORKFLOW
from tests.support.server import RUNBOOK, bearer, free_port
from tests.support.shared_db import fresh_database

DB_ENV = "SOVRA_TEST_TWO_REPLICAS_DB"
SOVRA = (sys.executable, "-c", "from sovra.cli import main; main()")
"""The `sovra` command of this interpreter, so PYTHONPATH picks the tree under test."""
BURST = 100
"""Requests per principal before the shared bucket is empty; it refills by one a minute, so
during the test the limit is the burst. The load test's threads stay below it by pacing."""
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
PASSWORD = "replica-password-1"


@dataclass
class Replica:
    name: str
    config: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.config.with_suffix(".log")

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*SOVRA, "--config", str(self.config), "serve", "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        tail = self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"replica {self.name} did not become ready:\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


@dataclass
class Cluster:
    a: Replica
    b: Replica
    keys: dict[str, tuple[str, str]]
    """user → (API key secret, key id), all scopes a user key may hold."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Cluster]:
    with fresh_database("sovra_two_replicas") as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv(DB_ENV, url)
        root = tmp_path_factory.mktemp("two-replicas")
        cfg = write_site(root, SERVER_FILES, company=shared_data / "company")
        text = cfg.read_text(encoding="utf-8")
        assert 'home = "data"' in text
        text = text.replace('home = "data"', f'home = "HOME"\ndatabase_url = "env:{DB_ENV}"')
        text += (
            "\n[server]\nsecure_cookies = false\n"
            f"rate_limit_per_minute = 1\nrate_limit_burst = {BURST}\n"
            "login_attempts_per_minute = 1000\n"
        )
        cfg.unlink()
        configs = {}
        for name in ("a", "b"):
            configs[name] = root / f"sovra-{name}.toml"
            configs[name].write_text(text.replace('"HOME"', f'"home-{name}"'), encoding="utf-8")
        # One sync: the directory and the sync state go to PostgreSQL, the index to home-a;
        # home-b gets a copy of it (and of the audit signing key the replicas share).
        sync_site(configs["a"])
        (root / "home-a" / "workflows").mkdir()
        (root / "home-a" / "workflows" / "access.yaml").write_text(WORKFLOW, encoding="utf-8")
        shutil.copytree(root / "home-a", root / "home-b")
        accounts = AccountStore.for_config(load_config(configs["a"]))
        keys = {}
        try:
            for user in ("alice", "bob", "carol", "dana", "root"):
                accounts.set_password(user, PASSWORD)
                secret, key = accounts.create_key(
                    user, "tests", ("search", "ask", "documents", "audit", "flows")
                )
                keys[user] = (secret, key.id)
        finally:
            accounts.close()
        a, b = Replica("a", configs["a"]), Replica("b", configs["b"])
        try:
            a.start()
            b.start()
            deadline = time.monotonic() + START_TIMEOUT_S
            a.wait_ready(deadline)
            b.wait_ready(deadline)
            yield Cluster(a, b, keys)
        finally:
            a.stop()
            b.stop()


def _client(replica: Replica) -> httpx.Client:
    return httpx.Client(base_url=replica.url, timeout=REQUEST_TIMEOUT_S)


def _login(replica: Replica, user: str) -> tuple[str, str]:
    """Sign in on `replica`: (session cookie, CSRF token)."""
    resp = httpx.post(
        replica.url + "/auth/login",
        json={"username": user, "password": PASSWORD},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert resp.status_code == 200, resp.text
    return resp.cookies["sovra_session"], resp.json()["csrf_token"]


def test_a_session_made_on_one_replica_works_on_the_other(cluster: Cluster) -> None:
    cookie, csrf = _login(cluster.a, "alice")
    with _client(cluster.b) as b:
        b.cookies.set("sovra_session", cookie)
        sources = b.get("/api/v1/sources")
        assert sources.status_code == 200, sources.text
        # A state-changing request on B with A's session: the CSRF token travels with it.
        hits = b.post(
            "/api/v1/search", json={"query": "etcd quota"}, headers={"X-CSRF-Token": csrf}
        )
        assert hits.status_code == 200, hits.text
        assert RUNBOOK in {h["document_id"] for h in hits.json()["hits"]}
        assert b.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    with _client(cluster.a) as a:
        a.cookies.set("sovra_session", cookie)
        assert a.get("/api/v1/sources").status_code == 401, "logged out on B ends it on A"


def test_a_key_revoked_on_one_replica_is_refused_by_the_other(cluster: Cluster) -> None:
    accounts = AccountStore.for_config(load_config(cluster.a.config))
    try:
        secret, key = accounts.create_key("carol", "revoke-me", ("search",))
    finally:
        accounts.close()
    for replica in (cluster.a, cluster.b):
        with _client(replica) as c:
            assert c.get("/api/v1/sources", headers=bearer(secret)).status_code == 200
    # `sovra apikey revoke` through A's configuration; B has just verified (and cached) the key.
    done = subprocess.run(
        [*SOVRA, "--config", str(cluster.a.config), "apikey", "revoke", key.id],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with _client(cluster.b) as b:
        refused = b.get("/api/v1/sources", headers=bearer(secret))
    assert refused.status_code == 401, refused.text


def test_rate_limits_are_global(cluster: Cluster) -> None:
    """One principal's requests split across A and B are limited by their sum: each replica
    alone would allow the whole burst."""
    secret = cluster.keys["root"][0]
    statuses: dict[str, list[int]] = {"a": [], "b": []}
    with _client(cluster.a) as a, _client(cluster.b) as b:
        for i in range(BURST + 20):
            name, c = ("a", a) if i % 2 else ("b", b)
            statuses[name].append(c.get("/api/v1/sources", headers=bearer(secret)).status_code)
    allowed = sum(s == 200 for v in statuses.values() for s in v)
    assert allowed == BURST, statuses
    for name, seen in statuses.items():
        assert set(seen) == {200, 429}, (name, seen)
        assert seen.count(200) < BURST, f"replica {name} alone spent less than the burst"


AFTER_KILL_S = 4.0
"""How long the load goes on against B (and the dead A) after the kill."""
SERVED_TIMEOUT_S = 20.0
"""How long to wait for A to answer a request under load before killing it."""
THREADS = 4
PACE_S = 0.3
"""A load thread sends at most one request per PACE_S: over SERVED_TIMEOUT_S + AFTER_KILL_S
that stays under BURST, so no thread meets its user's rate limit."""
QUERY = {"query": "etcd database quota"}


def test_an_approval_on_one_replica_continues_a_flow_started_on_the_other(
    cluster: Cluster,
) -> None:
    alice = bearer(cluster.keys["alice"][0])
    with _client(cluster.a) as a:
        started = a.post(
            "/api/v1/flows/access/runs", json={"inputs": {"title": "vpn"}}, headers=alice
        )
    assert started.status_code == 201, started.text
    run = started.json()
    assert run["status"] == "waiting_approval" and run["requester"] == "alice"
    # Bob (it-support) approves on B, signed in there: API keys never approve.
    cookie, csrf = _login(cluster.b, "bob")
    with _client(cluster.b) as b:
        b.cookies.set("sovra_session", cookie)
        inbox = b.get("/api/v1/flows/inbox")
        assert inbox.status_code == 200, inbox.text
        assert run["id"] in [item["run"]["id"] for item in inbox.json()]
        approved = b.post(
            f"/api/v1/flows/runs/{run['id']}/approve",
            json={"reason": "ok"},
            headers={"X-CSRF-Token": csrf},
        )
        assert approved.status_code == 200, approved.text
    for replica in (cluster.a, cluster.b):
        with _client(replica) as c:
            shown = c.get(f"/api/v1/flows/runs/{run['id']}", headers=alice)
        assert shown.status_code == 200, (replica.name, shown.text)
        body = shown.json()
        assert body["status"] == "completed", (replica.name, body)
        record = [s for s in body["steps"] if s["id"] == "record"]
        assert len(record) == 1 and record[0]["status"] == "done", (replica.name, record)
    tickets = _tickets_for(run["id"], cluster)
    assert tickets == 1, f"the action ran {tickets} times, not once"


def _tickets_for(run_id: str, cluster: Cluster) -> int:
    """How many times the shared ticket store holds the run's ticket (0 or 1)."""
    from sovra.flows.actions import TicketStore

    config = load_config(cluster.a.config)
    store = TicketStore.in_home(config.home, config.shared_database_url())
    try:
        return int(store.get(run_id) is not None)
    finally:
        store.close()


def test_killing_one_replica_under_load_costs_the_other_nothing(cluster: Cluster) -> None:
    """Runs last: it kills A. Requests to B all succeed; requests to A fail only as
    connection errors once it is gone; B stays ready."""
    results: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    users = ("alice", "bob", "carol", "dana")
    # One search each first: a replica's first search loads the embedder, which on shared
    # cores can outlast the time before the kill.
    for replica in (cluster.a, cluster.b):
        with _client(replica) as c:
            warm = c.post("/api/v1/search", json=QUERY, headers=bearer(cluster.keys["dana"][0]))
        assert warm.status_code == 200, (replica.name, warm.text)

    def load(n: int) -> None:
        headers = bearer(cluster.keys[users[n]][0])
        clients = {"a": _client(cluster.a), "b": _client(cluster.b)}
        try:
            i = 0
            while not stop.is_set():
                began = time.monotonic()
                name = "ab"[(i + n) % 2]
                i += 1
                try:
                    resp = clients[name].post("/api/v1/search", json=QUERY, headers=headers)
                    outcome = str(resp.status_code)
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                with lock:
                    results.append((name, outcome))
                stop.wait(max(0.0, PACE_S - (time.monotonic() - began)))
        finally:
            for c in clients.values():
                c.close()

    threads = [threading.Thread(target=load, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    try:
        # Kill A once it has answered under load, so the kill lands mid-traffic.
        served_by = time.monotonic() + SERVED_TIMEOUT_S
        while time.monotonic() < served_by:
            with lock:
                if ("a", "200") in results:
                    break
            time.sleep(0.1)
        assert cluster.a.proc is not None
        cluster.a.proc.send_signal(signal.SIGKILL)
        cluster.a.proc.wait(timeout=20)
        ready: list[int] = []
        until = time.monotonic() + AFTER_KILL_S
        while time.monotonic() < until:
            ready.append(
                httpx.get(cluster.b.url + "/readyz", timeout=REQUEST_TIMEOUT_S).status_code
            )
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT_S)
    to_b = [o for name, o in results if name == "b"]
    to_a = [o for name, o in results if name == "a"]
    assert to_b and set(to_b) == {"200"}, f"B answered {sorted(set(to_b))}"
    assert "200" in to_a, f"A never served under load: {sorted(set(to_a))}"
    failed_a = {o for o in to_a if o != "200"}
    assert failed_a, "A's requests after the kill fail"
    assert failed_a <= {"ConnectError", "RemoteProtocolError", "ReadError"}, failed_a
    assert ready and set(ready) == {200}, ready
