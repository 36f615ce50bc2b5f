"""Action adapters against real servers: SQLite, an aiosmtpd SMTP server and a loopback HTTP server."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from sovra.config import Config, FlowsConfig, SmtpConfig
from sovra.egress import EgressDenied, EgressGuard
from sovra.flows.actions import (
    DeliveryLedger,
    EmailAction,
    TicketStore,
    WebhookAction,
)
from sovra.flows.base import ActionAdapter, ActionError
from sovra.workspace import adapters_for

# -- servers ----------------------------------------------------------------------------------


class Collecting:
    """aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Collecting, int]]:
    handler = Collecting()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def refuse_all(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    return AuthResult(success=False, handled=False)


@pytest.fixture
def smtp_auth_server() -> Iterator[tuple[Collecting, int]]:
    """An SMTP server that requires a login and refuses every password."""
    handler = Collecting()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=refuse_all,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


class Hook:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.status = 200


@pytest.fixture
def http_server() -> Iterator[tuple[Hook, int]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            hook.requests.append((dict(self.headers.items()), body))
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def smtp_config(port: int, **kw: Any) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, sender="helpdesk@sovra.test", timeout_s=5, **kw)


# -- ticket store -----------------------------------------------------------------------------


def test_ticket_upsert_create_update_and_replay(tmp_path: Path) -> None:
    store = TicketStore(tmp_path / "tickets.db")
    first = store.execute(
        {"op": "upsert", "ticket_id": "T-1", "fields": {"title": "VPN down", "category": "4"}},
        idempotency_key="run1/step1",
    )
    assert first.outcome["created"] is True and not first.replayed
    second = store.execute(
        {"ticket_id": "T-1", "fields": {"status": "answered", "reply": "Try again"}},
        idempotency_key="run1/step2",
    )
    assert second.outcome == {
        "ticket_id": "T-1",
        "created": False,
        "changed": ["reply", "status"],
        "status": "answered",
    }
    replay = store.execute(
        {"ticket_id": "T-1", "fields": {"status": "answered", "reply": "Try again"}},
        idempotency_key="run1/step2",
    )
    assert replay.replayed and replay.outcome == second.outcome
    ticket = store.get("T-1")
    assert ticket is not None
    assert (ticket.title, ticket.category, ticket.status, ticket.reply) == (
        "VPN down",
        "4",
        "answered",
        "Try again",
    )
    # The replay wrote nothing: two history entries, one per distinct key.
    assert [h["key"] for h in ticket.history] == ["run1/step1", "run1/step2"]
    assert [t.ticket_id for t in store.list(status="answered")] == ["T-1"]
    assert store.list(status="new") == []
    assert store.get("T-404") is None


def test_ticket_replay_survives_reopen_and_ignores_changed_params(tmp_path: Path) -> None:
    db = tmp_path / "tickets.db"
    store = TicketStore(db)
    store.execute({"ticket_id": "T-2", "fields": {"status": "open"}}, idempotency_key="k")
    store.close()
    again = TicketStore(db)
    # A replayed key never changes the ticket, even if the parameters differ.
    result = again.execute(
        {"ticket_id": "T-2", "fields": {"status": "closed"}}, idempotency_key="k"
    )
    assert result.replayed
    ticket = again.get("T-2")
    assert ticket is not None and ticket.status == "open"


def test_ticket_change_and_key_are_one_transaction(tmp_path: Path) -> None:
    """If the idempotency row cannot be written, the ticket change is rolled back too."""
    db = tmp_path / "tickets.db"
    store = TicketStore(db)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TRIGGER no_keys BEFORE INSERT ON action_keys BEGIN SELECT RAISE(ABORT, 'disk'); END"
    )
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError):
        store.execute({"ticket_id": "T-3", "fields": {"title": "x"}}, idempotency_key="k3")
    assert store.get("T-3") is None
    conn.execute("DROP TRIGGER no_keys")
    conn.commit()
    conn.close()
    assert not store.execute({"ticket_id": "T-3", "fields": {}}, idempotency_key="k3").replayed


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"op": "delete", "ticket_id": "T"}, "unknown op"),
        ({"ticket_id": ""}, "ticket_id"),
        ({"ticket_id": "T", "fields": {"priority": "1"}}, r"unknown field\(s\) priority"),
        ({"ticket_id": "T", "fields": ["status"]}, "'fields' must be a mapping"),
    ],
)
def test_ticket_bad_params_are_not_retryable(
    tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    store = TicketStore(tmp_path / "tickets.db")
    with pytest.raises(ActionError, match=message) as err:
        store.execute(params, idempotency_key="k")
    assert err.value.retryable is False


# -- webhook ----------------------------------------------------------------------------------


def test_webhook_delivers_once_with_idempotency_key(
    tmp_path: Path, http_server: tuple[Hook, int]
) -> None:
    hook, port = http_server
    action = WebhookAction(DeliveryLedger(tmp_path / "ledger.db"), ("127.0.0.1",))
    url = f"http://127.0.0.1:{port}/hook"
    params = {"url": url, "payload": {"ticket": "T-1", "category": "4"}}
    first = action.execute(params, idempotency_key="run7/notify")
    assert first.outcome == {"url": url, "status": 200} and not first.replayed
    assert len(hook.requests) == 1
    headers, body = hook.requests[0]
    assert headers["Idempotency-Key"] == "run7/notify"
    assert body == {"ticket": "T-1", "category": "4"}
    # Replay — also from a fresh adapter on the same ledger, as after a restart: no second POST.
    again = WebhookAction(DeliveryLedger(tmp_path / "ledger.db"), ("127.0.0.1",))
    replay = again.execute(params, idempotency_key="run7/notify")
    assert replay.replayed and replay.outcome == first.outcome
    assert len(hook.requests) == 1


def test_webhook_5xx_is_retryable_4xx_is_not(tmp_path: Path, http_server: tuple[Hook, int]) -> None:
    hook, port = http_server
    action = WebhookAction(DeliveryLedger(tmp_path / "ledger.db"), (f"127.0.0.1:{port}",))
    url = f"http://127.0.0.1:{port}/hook"
    hook.status = 500
    with pytest.raises(ActionError, match="HTTP 500") as err:
        action.execute({"url": url, "payload": {}}, idempotency_key="a")
    assert err.value.retryable is True
    hook.status = 400
    with pytest.raises(ActionError, match="HTTP 400") as err:
        action.execute({"url": url, "payload": {}}, idempotency_key="b")
    assert err.value.retryable is False
    # A failed key is not recorded: once the server recovers, the retry delivers.
    hook.status = 200
    assert not action.execute({"url": url, "payload": {}}, idempotency_key="a").replayed
    assert len(hook.requests) == 3


def test_webhook_connection_refused_is_retryable(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    action = WebhookAction(DeliveryLedger(tmp_path / "ledger.db"), ("127.0.0.1",), timeout_s=3)
    with pytest.raises(ActionError, match="failed: ConnectError") as err:
        action.execute({"url": f"http://127.0.0.1:{port}/", "payload": {}}, idempotency_key="c")
    assert err.value.retryable is True


def test_webhook_host_not_allowed_is_refused(tmp_path: Path, http_server: tuple[Hook, int]) -> None:
    hook, port = http_server
    action = WebhookAction(DeliveryLedger(tmp_path / "ledger.db"), ("hooks.example.eu",))
    with pytest.raises(ActionError, match=r"refused.*webhook_hosts") as err:
        action.execute({"url": f"http://127.0.0.1:{port}/", "payload": {}}, idempotency_key="d")
    assert err.value.retryable is False
    # Same host on another port than the one allowed: refused too.
    pinned = WebhookAction(DeliveryLedger(tmp_path / "l2.db"), (f"127.0.0.1:{port + 1}",))
    with pytest.raises(ActionError, match="refused"):
        pinned.execute({"url": f"http://127.0.0.1:{port}/", "payload": {}}, idempotency_key="d")
    assert hook.requests == []


# -- e-mail -----------------------------------------------------------------------------------


def test_email_delivers_once_with_message_id_from_key(
    tmp_path: Path, smtp_server: tuple[Collecting, int]
) -> None:
    handler, port = smtp_server
    ledger = DeliveryLedger(tmp_path / "ledger.db")
    action = EmailAction(ledger, smtp_config(port))
    params = {"to": ["bob@example.org"], "subject": "Your ticket T-1", "body": "Hello Bob"}
    first = action.execute(params, idempotency_key="run9/mail")
    assert not first.replayed and first.outcome["to"] == ["bob@example.org"]
    assert len(handler.messages) == 1
    rcpts, msg = handler.messages[0]
    assert rcpts == ["bob@example.org"]
    assert msg["Subject"] == "Your ticket T-1"
    assert msg["Message-ID"] == action.message_id("run9/mail") == first.outcome["message_id"]
    assert "Hello Bob" in msg.get_payload()
    replay = EmailAction(DeliveryLedger(tmp_path / "ledger.db"), smtp_config(port)).execute(
        params, idempotency_key="run9/mail"
    )
    assert replay.replayed and replay.outcome == first.outcome
    assert len(handler.messages) == 1


def test_email_smtp_down_is_retryable(tmp_path: Path) -> None:
    action = EmailAction(DeliveryLedger(tmp_path / "ledger.db"), smtp_config(free_port()))
    with pytest.raises(ActionError, match="unreachable") as err:
        action.execute({"to": "bob@example.org", "subject": "s", "body": "b"}, idempotency_key="k")
    assert err.value.retryable is True
    # Nothing recorded: a later attempt will really send.
    assert DeliveryLedger(tmp_path / "ledger.db").get("email", "k") is None


@pytest.mark.parametrize(
    "params",
    [
        {"to": "bob@example.org\r\nBcc: eve@evil.example", "subject": "s"},
        {"to": ["bob@example.org", "eve@evil.example\nX: y"], "subject": "s"},
        {"to": "bob@example.org", "subject": "hi\r\nBcc: eve@evil.example"},
        {"to": "Bob <bob@example.org>, eve@evil.example", "subject": "s"},
        {"to": "not-an-address", "subject": "s"},
        {"to": [], "subject": "s"},
    ],
)
def test_email_header_injection_and_bad_recipients_refused(
    tmp_path: Path, smtp_server: tuple[Collecting, int], params: dict[str, Any]
) -> None:
    handler, port = smtp_server
    action = EmailAction(DeliveryLedger(tmp_path / "ledger.db"), smtp_config(port))
    with pytest.raises(ActionError) as err:
        action.execute({**params, "body": "b"}, idempotency_key="inj")
    assert err.value.retryable is False
    assert handler.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_password_never_in_error_text(
    tmp_path: Path,
    smtp_auth_server: tuple[Collecting, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, port = smtp_auth_server
    secret = "s3cret-Pa55word"
    monkeypatch.setenv("SOVRA_TEST_SMTP_PW", secret)
    action = EmailAction(
        DeliveryLedger(tmp_path / "ledger.db"),
        smtp_config(port, username="helpdesk", password_env="SOVRA_TEST_SMTP_PW"),
    )
    with pytest.raises(ActionError, match="refused the login") as err:
        action.execute({"to": "bob@example.org", "subject": "s", "body": "b"}, idempotency_key="pw")
    assert err.value.retryable is False
    assert secret not in str(err.value) and secret not in caplog.text
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert handler.messages == []
    monkeypatch.delenv("SOVRA_TEST_SMTP_PW")
    with pytest.raises(ActionError, match="set the environment variable SOVRA_TEST_SMTP_PW"):
        action.execute({"to": "bob@example.org", "subject": "s", "body": "b"}, idempotency_key="pw")


def test_adapters_for_wires_config(tmp_path: Path) -> None:
    cfg = Config(flows=FlowsConfig(webhook_hosts=("hooks.example.eu",)))
    adapters = adapters_for(cfg, tmp_path)
    assert set(adapters) == {"ticket_store", "webhook", "email"}
    for name, adapter in adapters.items():
        assert isinstance(adapter, ActionAdapter) and adapter.name == name
    assert adapters["ticket_store"].changes == {"ticket.create", "ticket.update"}
    assert adapters["webhook"].changes == {"http.post"}
    assert adapters["email"].changes == {"email.send"}
    assert (tmp_path / "tickets.db").is_file()


def test_egress_extra_hosts_respect_airgap_and_reject_bad_entries() -> None:
    guard = EgressGuard(
        (), airgap=True, extra_hosts=("hooks.internal:8443",), resolver=lambda h, p: ["10.0.0.5"]
    )
    assert guard.check("https://hooks.internal:8443/x") is None
    with pytest.raises(EgressDenied, match=r"allowed: hooks\.internal:8443"):
        guard.check("https://hooks.internal/x")
    public = EgressGuard(
        (), airgap=True, extra_hosts=("hooks.example.eu",), resolver=lambda h, p: ["93.184.216.34"]
    )
    with pytest.raises(EgressDenied, match=r"non-local address 93\.184\.216\.34"):
        public.check("https://hooks.example.eu/x")
    with pytest.raises(EgressDenied, match="not a host name"):
        EgressGuard((), extra_hosts=("http://",))


def test_webhook_key_must_fit_a_header(tmp_path: Path) -> None:
    action = WebhookAction(DeliveryLedger(tmp_path / "ledger.db"), ("127.0.0.1",))
    for key in ("run/ü", "run\r\nX-Evil: 1"):
        with pytest.raises(ActionError, match="printable ASCII") as err:
            action.execute({"url": "http://127.0.0.1:9/", "payload": {}}, idempotency_key=key)
        assert err.value.retryable is False
