"""The flows stores on the shared PostgreSQL database (`[workspace] database_url`): two store
objects built from one URL stand for two replicas. A run and its approval, a vote race, a
delivery and a ticket change are each seen, decided or made once across them; erasure reaches
the rows; and a workflow run on a workspace with `database_url` leaves no local state file."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from sovra.flows.actions import DeliveryLedger, TicketStore, WebhookAction
from sovra.flows.base import FlowConflict, FlowError
from sovra.flows.runner import RUNNER_LOCK
from sovra.flows.store import FlowStore
from tests.flows.test_actions import Hook, http_server  # noqa: F401  (the fixture)
from tests.support.shared_db import fresh_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("sovra_flows") as url:
        yield url


def _waiting_run(store: FlowStore, run_id: str = "r1", required: int = 1) -> None:
    store.create_run(run_id, "ticket", "{}", "carol", {"title": "laptop"}, {"docs": []})
    store.update_run(run_id, status="waiting_approval", step_index=1)
    store.open_approval(run_id, "ok", "it-support", required, None, 24.0, time.time() + 3600, "d1")


def test_run_and_approval_written_on_one_replica_are_read_on_another(pg_url: str) -> None:
    one, two = FlowStore(pg_url), FlowStore(pg_url)
    _waiting_run(one)
    one.set_step("r1", "classify", "done", {"label": "hardware"}, attempts=1)
    one.set_switch("ticket", True, "dave", "incident")
    run = two.run("r1")
    assert (run.requester, run.status, run.inputs, run.labels) == (
        "carol",
        "waiting_approval",
        {"title": "laptop"},
        {"docs": []},
    )
    approval = two.approval("r1")
    assert approval is not None and approval.status == "open" and approval.outputs_sha256 == "d1"
    assert [a.run_id for a in two.open_approvals()] == ["r1"]
    assert two.steps("r1")["classify"].output == {"label": "hardware"}
    switch = two.switch("ticket")
    assert switch is not None and switch["set_by"] == "dave"
    # A replay of the same approval on the other replica keeps the first one.
    two.open_approval("r1", "ok", "other", 2, None, 1.0, 0.0, "d2")
    kept = one.approval("r1", "ok")
    assert kept is not None and kept.group == "it-support" and kept.outputs_sha256 == "d1"
    # A second vote by the same person is refused whichever replica takes it.
    one.add_vote(kept, "erin", "approve", "ok", time.time())
    with pytest.raises(FlowConflict, match="erin has already decided"):
        two.add_vote(kept, "erin", "approve", "again", time.time())


def _decide(store: FlowStore, user: str, start: threading.Barrier) -> str:
    """What `Flows.approve` does inside its transaction, with a pause between the check and
    the write so that, without one writer at a time, both deciders would pass the check."""
    start.wait()
    with store.transaction():
        approval = store.approval("r1")
        assert approval is not None
        if approval.status != "open":
            return "refused"
        time.sleep(0.3)
        store.add_vote(approval, user, "approve", "", time.time())
        store.update_approval("r1", approval.step_id, status="approved")
        store.next_segment("r1", 2)
    return "won"


def test_two_replicas_deciding_one_approval_at_once_exactly_one_wins(pg_url: str) -> None:
    _waiting_run(FlowStore(pg_url))
    start = threading.Barrier(2)
    results: dict[str, str] = {}

    def decide(user: str) -> None:
        results[user] = _decide(FlowStore(pg_url), user, start)

    threads = [threading.Thread(target=decide, args=(u,)) for u in ("erin", "frank")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results.values()) == ["refused", "won"]
    store = FlowStore(pg_url)
    assert len(store.votes("r1", "ok")) == 1
    assert store.run("r1").segment == 2  # continued once, not twice


def test_delivery_recorded_once_is_not_sent_again_by_another_replica(
    pg_url: str,
    http_server: tuple[Hook, int],  # noqa: F811
) -> None:
    hook, port = http_server
    url = f"http://127.0.0.1:{port}/hook"
    params = {"url": url, "payload": {"ticket": "T-1"}}
    first = WebhookAction(DeliveryLedger(pg_url), ("127.0.0.1",)).execute(
        params, idempotency_key="r1:notify"
    )
    assert not first.replayed and len(hook.requests) == 1
    replay = WebhookAction(DeliveryLedger(pg_url), ("127.0.0.1",)).execute(
        params, idempotency_key="r1:notify"
    )
    assert replay.replayed and replay.outcome == first.outcome
    assert len(hook.requests) == 1
    # The first outcome recorded for a key stays, whichever replica records again.
    DeliveryLedger(pg_url).record("webhook", "r1:notify", {"status": 500})
    assert DeliveryLedger(pg_url).get("webhook", "r1:notify") == first.outcome


def test_one_ticket_change_for_one_key_across_replicas(pg_url: str) -> None:
    stores = [TicketStore(pg_url) for _ in range(4)]
    start = threading.Barrier(len(stores))
    results: list[Any] = []

    def change(store: TicketStore) -> None:
        start.wait()
        results.append(
            store.execute({"ticket_id": "T-9", "fields": {"status": "open"}}, idempotency_key="k")
        )

    threads = [threading.Thread(target=change, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    ticket = stores[0].get("T-9")
    assert ticket is not None and ticket.status == "open" and len(ticket.history) == 1


def test_erasure_reaches_the_rows_on_postgres(pg_url: str) -> None:
    store = FlowStore(pg_url)
    _waiting_run(store)
    store.set_step("r1", "draft", "done", {"text": "dear carol", "to": "carol"})
    store.create_run("r2", "ticket", "{}", "erin", {"cc": "carol"})
    store.update_run("r2", error="rejected by carol")
    approval = store.approval("r1")
    assert approval is not None
    store.add_vote(approval, "erin", "approve", "fine", time.time())
    store.set_switch("*", True, "carol", "stop everything")
    ledger, tickets = DeliveryLedger(pg_url), TicketStore(pg_url)
    ledger.record("email", "r1:mail", {"to": "carol@example.eu"})
    ledger.record("email", "r10:mail", {"to": "other@example.eu"})
    tickets.execute({"ticket_id": "T-1", "fields": {"reply": "hi carol"}}, idempotency_key="r1:t")

    changed = FlowStore(pg_url).erase_subject("carol", "erased:x")
    assert changed["runs"] == ["r1"]
    run = store.run("r1")
    assert (run.requester, run.inputs, run.status) == ("erased:x", {}, "cancelled")
    assert store.steps("r1")["draft"].output is None
    assert store.approval("r1", "ok") is not None
    assert store.open_approvals() == []
    assert store.run("r2").inputs == {"cc": "erased:x"}  # named as a value in another run
    assert store.run("r2").error == "rejected by erased:x"
    switch = store.switch("ticket")
    assert switch is not None and (switch["set_by"], switch["reason"]) == ("erased:x", "")
    assert DeliveryLedger(pg_url).forget_runs(["r1"]) == 1
    assert TicketStore(pg_url).forget_runs(["r1"]) == 1
    assert ledger.get("email", "r1:mail") == {"erased": True}
    assert ledger.get("email", "r10:mail") == {"to": "other@example.eu"}


def _shared_flows(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], Any]:
    """A site whose `[workspace] database_url` names `pg_url`; returns a maker of its `Flows`."""
    from tests.support.flows import USERS, config, make_site

    monkeypatch.setenv("SOVRA_TEST_FLOWS_DB", pg_url)
    tmp_path.mkdir(exist_ok=True)
    cfg_path = make_site(tmp_path)
    cfg_path.write_text(
        cfg_path.read_text(encoding="utf-8").replace(
            '[workspace]\nhome = "data"\n',
            '[workspace]\nhome = "data"\ndatabase_url = "env:SOVRA_TEST_FLOWS_DB"\n',
        ),
        encoding="utf-8",
    )
    from sovra.workspace import Workspace

    ws = Workspace.open(config(tmp_path))
    try:
        for user, groups in USERS.items():
            ws.directory.add_user(user, groups)
    finally:
        ws.close()

    return _flows_of(tmp_path)


def _flows_of(site: Path) -> Callable[[], Any]:
    from sovra.workspace import open_flows
    from tests.support.flows import adapters, classifiers, config

    def flows() -> Any:
        return open_flows(
            config(site), adapters=adapters(site), classifiers=classifiers(), sleep=lambda s: None
        )

    return flows


def _runner_lock_free(pg_url: str) -> bool:
    """Whether another session could take the runner lock now (released again at once)."""
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            free = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(hashtext(:n))"), {"n": RUNNER_LOCK}
                ).scalar_one()
            )
            if free:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": RUNNER_LOCK})
            return free
    finally:
        engine.dispose()


def test_one_process_across_replicas_executes_runs(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every replica's DBOS recovers every pending segment of the shared system database at
    launch, so two launched at once could run one step twice: the runner lock forbids it."""
    from tests.support.flows import TICKET

    flows = _shared_flows(tmp_path / "a", pg_url, monkeypatch)
    # Replica b: its own home, with the keys every replica shares (audit signing, digests).
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    replica_b = _flows_of(tmp_path / "b")
    holder = flows()
    try:
        holder.recover()  # launched: this process executes runs now
        assert not _runner_lock_free(pg_url)
        other = replica_b()
        try:
            with pytest.raises(FlowError, match="another replica"):
                other.engine.launch(wait_s=0.5)
        finally:
            other.close()
    finally:
        holder.close()
    assert _runner_lock_free(pg_url)
    f = replica_b()  # the refused one left neither lock behind
    try:
        assert f.start("ticket", TICKET, "bob").status == "waiting_approval"
    finally:
        f.close()


def test_a_workflow_run_on_a_shared_workspace_keeps_no_local_state(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.flows import TICKET, config

    flows = _shared_flows(tmp_path, pg_url, monkeypatch)
    f = flows()
    try:
        run = f.start("ticket", TICKET, "bob")
    finally:
        f.close()
    assert run.status == "waiting_approval"
    assert not (tmp_path / "data" / "flows-state.db").exists()
    # What a second replica reads: the run and its open approval, from the database.
    other = FlowStore(pg_url)
    assert other.run(run.id).status == "waiting_approval"
    assert other.approval(run.id) is not None
    f = flows()
    try:
        assert f.approve(run.id, "erin", "looks right").status == "completed"
    finally:
        f.close()
    assert other.run(run.id).status == "completed"

    # `sovra erase` on any replica reaches the run and its actions' outcomes in the database.
    from sovra.cli.erasure import erase_stores

    DeliveryLedger(pg_url).record("email", f"{run.id}:mail", {"to": "bob@example.eu"})
    report = erase_stores(config(tmp_path), "bob")
    assert report["flows"]["runs"] == 1 and report["actions"] == 1
    assert other.run(run.id).requester.startswith("erased:")
    assert DeliveryLedger(pg_url).get("email", f"{run.id}:mail") == {"erased": True}
    home = tmp_path / "data"
    assert not any(
        (home / f).exists() for f in ("flows-state.db", "action-ledger.db", "tickets.db")
    )
