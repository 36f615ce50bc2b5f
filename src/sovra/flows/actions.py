"""Action adapters: what a workflow may change in the world.

Three adapters, each behind the `ActionAdapter` contract of `flows.base`:

- `TicketStore` (`ticket_store`): rows in `<home>/tickets.db`, a stand-in for a helpdesk. The
  change and its idempotency record are written in one SQLite transaction, so "exactly once"
  holds even across `kill -9`: either both are on disk or neither is.
- `WebhookAction` (`webhook`): a JSON POST through the egress guard, which allows only
  `[flows] webhook_hosts`. A local ledger records delivered keys, so a replay after success
  does not POST again. A crash *between* "the POST succeeded" and "the ledger row is written"
  makes the runner POST again on resume; exactly-once across that window relies on the
  receiver honouring the `Idempotency-Key` header (the same key is sent every time).
- `EmailAction` (`email`): SMTP to `[flows.smtp]`. The Message-ID is derived from the key and a
  ledger records sent keys; the same crash window as the webhook exists, and a receiving
  system that de-duplicates on Message-ID closes it.

Errors are `ActionError`: `retryable=True` for a server that is down or answers 5xx/4xx-transient,
`retryable=False` for a request that can never succeed (bad parameters, refused host, 4xx).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import smtplib
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx

from sovra.config import SmtpConfig
from sovra.egress import EgressDenied, EgressGuard, guarded_client
from sovra.flows.base import ActionError, ActionResult
from sovra.storage import erasing, open_sqlite, write_transaction

log = logging.getLogger(__name__)

TICKET_FIELDS = ("title", "body", "category", "urgency", "status", "assignee", "reply")
_MAX_KEY = 512


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > _MAX_KEY:
        raise ActionError(
            f"idempotency key must be a non-empty string of at most {_MAX_KEY} characters",
            retryable=False,
        )
    return key


def _params_digest(params: Mapping[str, Any]) -> str:
    blob = json.dumps(params, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# -- ticket store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    """One row of the stand-in helpdesk."""

    ticket_id: str
    title: str = ""
    body: str = ""
    category: str = ""
    urgency: str = ""
    status: str = "new"
    assignee: str = ""
    reply: str = ""
    updated_at: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TICKET_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    ticket_id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    urgency TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'new',
    assignee TEXT NOT NULL DEFAULT '',
    reply TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    history TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS action_keys (
    idempotency_key TEXT PRIMARY KEY,
    params_sha256 TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


class TicketStore:
    """`ticket_store`: create or update tickets; `upsert` with the same key twice changes nothing."""

    name = "ticket_store"
    changes: frozenset[str] = frozenset({"ticket.create", "ticket.update"})

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_sqlite(path, timeout=30.0, synchronous="FULL")
        self._conn.executescript(_TICKET_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def forget_runs(self, run_ids: Sequence[str]) -> int:
        """Erasure: the outcomes recorded for these runs' keys are replaced. The tickets
        themselves are the ticket system's records (this store stands in for one)."""
        with self._lock:
            return forget_outcomes(self._conn, "action_keys", run_ids)

    def execute(self, params: Mapping[str, Any], *, idempotency_key: str) -> ActionResult:
        key = _check_key(idempotency_key)
        ticket_id, fields = self._parse(params)
        digest = _params_digest(params)
        # The write lock is taken before the idempotency check, so two processes cannot both
        # pass it.
        with self._lock, write_transaction(self._conn) as conn:
            seen = conn.execute(
                "SELECT params_sha256, outcome FROM action_keys WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if seen is not None:
                if seen[0] != digest:
                    log.warning("ticket_store: key %s replayed with different parameters", key)
                return ActionResult(self.name, key, json.loads(seen[1]), replayed=True)
            row = conn.execute(
                f"SELECT {', '.join(TICKET_FIELDS)}, history FROM tickets WHERE ticket_id = ?",
                (ticket_id,),
            ).fetchone()
            created = row is None
            current = (
                dict.fromkeys(TICKET_FIELDS, "") | {"status": "new"}
                if row is None
                else dict(zip(TICKET_FIELDS, row[:-1], strict=True))
            )
            history: list[dict[str, Any]] = [] if row is None else json.loads(row[-1])
            changed = sorted(k for k, v in fields.items() if current.get(k) != v)
            current.update(fields)
            now = _now()
            history.append({"at": now, "key": key, "changed": changed, "created": created})
            conn.execute(
                f"INSERT OR REPLACE INTO tickets (ticket_id, {', '.join(TICKET_FIELDS)},"
                " updated_at, history) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ticket_id, *(current[k] for k in TICKET_FIELDS), now, json.dumps(history)),
            )
            outcome = {
                "ticket_id": ticket_id,
                "created": created,
                "changed": changed,
                "status": current["status"],
            }
            conn.execute(
                "INSERT INTO action_keys (idempotency_key, params_sha256, outcome, at)"
                " VALUES (?, ?, ?, ?)",
                (key, digest, json.dumps(outcome), now),
            )
        return ActionResult(self.name, key, outcome)

    @staticmethod
    def _parse(params: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
        op = params.get("op", "upsert")
        if op != "upsert":
            raise ActionError(
                f"ticket_store: unknown op {op!r}; the only op is 'upsert'", retryable=False
            )
        ticket_id = params.get("ticket_id")
        if not isinstance(ticket_id, str) or not ticket_id.strip():
            raise ActionError(
                "ticket_store: 'ticket_id' must be a non-empty string", retryable=False
            )
        raw = params.get("fields", {})
        if not isinstance(raw, Mapping):
            raise ActionError(
                "ticket_store: 'fields' must be a mapping of field to value", retryable=False
            )
        unknown = sorted(set(raw) - set(TICKET_FIELDS))
        if unknown:
            raise ActionError(
                f"ticket_store: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(TICKET_FIELDS)}",
                retryable=False,
            )
        fields = {k: "" if v is None else str(v) for k, v in raw.items()}
        return ticket_id.strip(), fields

    def get(self, ticket_id: str) -> Ticket | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT ticket_id, {', '.join(TICKET_FIELDS)}, updated_at, history FROM tickets"
                " WHERE ticket_id = ?",
                (ticket_id,),
            ).fetchone()
        return None if row is None else _ticket(row)

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Ticket]:
        """Most recently updated first."""
        query = f"SELECT ticket_id, {', '.join(TICKET_FIELDS)}, updated_at, history FROM tickets"
        args: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        query += " ORDER BY updated_at DESC, ticket_id LIMIT ?"
        with self._lock:
            rows = self._conn.execute(query, (*args, limit)).fetchall()
        return [_ticket(r) for r in rows]


def _ticket(row: tuple[Any, ...]) -> Ticket:
    values = dict(zip(("ticket_id", *TICKET_FIELDS, "updated_at"), row[:-1], strict=True))
    return Ticket(**values, history=json.loads(row[-1]))


# -- delivery ledger (webhook, e-mail) ---------------------------------------------------------


class DeliveryLedger:
    """Keys an adapter has delivered, with their outcome: a replay returns it instead of re-sending."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_sqlite(path, timeout=30.0, synchronous="FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS delivered (adapter TEXT NOT NULL, idempotency_key TEXT"
            " NOT NULL, outcome TEXT NOT NULL, at TEXT NOT NULL,"
            " PRIMARY KEY (adapter, idempotency_key))"
        )
        self._lock = threading.Lock()

    def get(self, adapter: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT outcome FROM delivered WHERE adapter = ? AND idempotency_key = ?",
                (adapter, key),
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def record(self, adapter: str, key: str, outcome: Mapping[str, Any]) -> None:
        with self._lock, write_transaction(self._conn) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO delivered (adapter, idempotency_key, outcome, at)"
                " VALUES (?, ?, ?, ?)",
                (adapter, key, json.dumps(dict(outcome)), _now()),
            )

    def forget_runs(self, run_ids: Sequence[str]) -> int:
        """Erasure: the outcomes recorded for these runs' actions (recipients, replies) are
        replaced; the keys stay, so a replay still sends nothing twice."""
        with self._lock:
            return forget_outcomes(self._conn, "delivered", run_ids)

    def close(self) -> None:
        self._conn.close()


def forget_outcomes(conn: sqlite3.Connection, table: str, run_ids: Sequence[str]) -> int:
    """Replace the recorded outcomes of idempotency keys `<run id>:<step>` of these runs."""
    changed = 0
    with erasing(conn) as db:
        for run_id in run_ids:
            changed += db.execute(
                f"UPDATE {table} SET outcome = ? WHERE substr(idempotency_key, 1, ?) = ?",
                (json.dumps({"erased": True}), len(run_id) + 1, run_id + ":"),
            ).rowcount
    return changed


# -- webhook ----------------------------------------------------------------------------------


class WebhookAction:
    """`webhook`: POST `payload` as JSON to `url`, only to hosts in `[flows] webhook_hosts`."""

    name = "webhook"
    changes: frozenset[str] = frozenset({"http.post"})

    def __init__(
        self,
        ledger: DeliveryLedger,
        allowed_hosts: tuple[str, ...],
        *,
        airgap: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.ledger = ledger
        self.allowed_hosts = allowed_hosts
        self.guard = EgressGuard((), airgap=airgap, extra_hosts=allowed_hosts)
        self.timeout_s = timeout_s
        # One delivery per key at a time within this process (the ledger covers later calls).
        self._lock = threading.Lock()

    def execute(self, params: Mapping[str, Any], *, idempotency_key: str) -> ActionResult:
        key = _check_key(idempotency_key)
        if not key.isascii() or not key.isprintable():
            # It travels as an HTTP header value, which must be printable ASCII.
            raise ActionError(
                "webhook: the idempotency key must be printable ASCII", retryable=False
            )
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise ActionError("webhook: 'url' must be an http(s) URL string", retryable=False)
        payload = params.get("payload", {})
        try:
            body = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ActionError(
                f"webhook: 'payload' is not JSON-serialisable: {exc}", retryable=False
            ) from None
        with self._lock:
            done = self.ledger.get(self.name, key)
            if done is not None:
                return ActionResult(self.name, key, done, replayed=True)
            try:
                self.guard.check(url)
            except EgressDenied as exc:
                raise ActionError(
                    f"webhook: {exc}; add the host to [flows] webhook_hosts in sovra.toml to allow it",
                    retryable=False,
                ) from None
            headers = {"Content-Type": "application/json", "Idempotency-Key": key}
            try:
                with guarded_client(self.guard, timeout=self.timeout_s) as client:
                    response = client.post(url, content=body, headers=headers)
            except EgressDenied as exc:
                raise ActionError(f"webhook: {exc}", retryable=False) from None
            except httpx.HTTPError as exc:
                raise ActionError(
                    f"webhook: POST to {_safe_url(url)} failed: {type(exc).__name__}: {exc}",
                    retryable=True,
                ) from None
            status = response.status_code
            if status >= 500 or status in (408, 425, 429):
                raise ActionError(
                    f"webhook: {_safe_url(url)} answered HTTP {status}; will retry", retryable=True
                )
            if status >= 300:
                raise ActionError(
                    f"webhook: {_safe_url(url)} answered HTTP {status}; the request was refused"
                    " and is not retried (redirects are not followed)",
                    retryable=False,
                )
            outcome = {"url": _safe_url(url), "status": status}
            self.ledger.record(self.name, key, outcome)
        return ActionResult(self.name, key, outcome)


def _safe_url(url: str) -> str:
    """The URL without user info or query (either may hold a token)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))


# -- e-mail -----------------------------------------------------------------------------------

# A deliberately plain address check: local@domain, no spaces, no display names, no CR/LF.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_MAX_RECIPIENTS = 50


def validate_address(value: Any, what: str = "recipient") -> str:
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise ActionError(
            f"email: {what} {value!r} is not a single address (line breaks are refused)",
            retryable=False,
        )
    text = value.strip()
    if len(text) > 254 or not _ADDRESS.match(text):
        raise ActionError(
            f"email: {what} {text!r} is not a valid address; write it as name@example.org",
            retryable=False,
        )
    return text


class EmailAction:
    """`email`: send a plain-text message over SMTP; Message-ID derived from the idempotency key."""

    name = "email"
    changes: frozenset[str] = frozenset({"email.send"})

    def __init__(
        self, ledger: DeliveryLedger, smtp: SmtpConfig, *, base_dir: Path | None = None
    ) -> None:
        self.ledger = ledger
        self.smtp = smtp
        self.base_dir = base_dir
        self.sender = validate_address(smtp.sender, "sender ([flows.smtp] sender)")
        self._lock = threading.Lock()

    def message_id(self, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return f"<{digest}@{self.sender.rsplit('@', 1)[1]}>"

    def _password(self) -> str | None:
        s = self.smtp
        if s.password_env:
            value = os.environ.get(s.password_env)
            if not value:
                raise ActionError(
                    f"email: SMTP password missing; set the environment variable {s.password_env}"
                    " (named by [flows.smtp] password_env)",
                    retryable=False,
                )
            return value
        if s.password_file:
            path = s.password_file
            if not path.is_absolute() and self.base_dir is not None:
                path = self.base_dir / path
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ActionError(
                    f"email: cannot read the SMTP password file {path} ([flows.smtp] password_file):"
                    f" {exc.strerror}",
                    retryable=False,
                ) from None
        return None

    def build(self, params: Mapping[str, Any], key: str) -> tuple[EmailMessage, list[str]]:
        raw_to = params.get("to")
        items = [raw_to] if isinstance(raw_to, str) else raw_to
        if not isinstance(items, list | tuple) or not items:
            raise ActionError(
                "email: 'to' must be an address or a non-empty list of addresses", retryable=False
            )
        if len(items) > _MAX_RECIPIENTS:
            raise ActionError(
                f"email: at most {_MAX_RECIPIENTS} recipients per message", retryable=False
            )
        recipients = [validate_address(a) for a in items]
        subject = params.get("subject", "")
        if not isinstance(subject, str) or any(c in subject for c in "\r\n\0"):
            raise ActionError(
                "email: 'subject' must be one line of text (line breaks are refused)",
                retryable=False,
            )
        body = params.get("body", "")
        if not isinstance(body, str):
            raise ActionError("email: 'body' must be text", retryable=False)
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = self.message_id(key)
        msg.set_content(body)
        return msg, recipients

    def execute(self, params: Mapping[str, Any], *, idempotency_key: str) -> ActionResult:
        key = _check_key(idempotency_key)
        msg, recipients = self.build(params, key)
        with self._lock:
            done = self.ledger.get(self.name, key)
            if done is not None:
                return ActionResult(self.name, key, done, replayed=True)
            password = self._password()
            try:
                refused = self._send(msg, recipients, password)
            except ActionError as exc:
                raise ActionError(_scrub(str(exc), password), retryable=exc.retryable) from None
            outcome = {
                "message_id": msg["Message-ID"],
                "to": [r for r in recipients if r not in refused],
                "refused": sorted(refused),
                "subject": msg["Subject"],
            }
            self.ledger.record(self.name, key, outcome)
        return ActionResult(self.name, key, outcome)

    def _send(self, msg: EmailMessage, recipients: list[str], password: str | None) -> list[str]:
        """Send; the recipients the server refused while accepting others."""
        s = self.smtp
        where = f"{s.host}:{s.port}"
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_s) as client:
                if s.starttls:
                    client.starttls()
                if s.username:
                    client.login(s.username, password or "")
                refused = client.send_message(msg, from_addr=self.sender, to_addrs=recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise ActionError(
                f"email: SMTP server {where} refused the login for {s.username!r} (code {exc.smtp_code});"
                " check [flows.smtp] username and the password reference",
                retryable=False,
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise ActionError(
                f"email: SMTP server {where} does not offer what [flows.smtp] asks for"
                " (STARTTLS or AUTH); check starttls and username",
                retryable=False,
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise ActionError(
                f"email: SMTP server {where} refused every recipient (codes {codes})",
                retryable=all(400 <= c < 500 for c in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise ActionError(
                f"email: SMTP server {where} answered {exc.smtp_code}",
                retryable=400 <= exc.smtp_code < 500 or exc.smtp_code == 421,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, disconnected
            raise ActionError(
                f"email: SMTP server {where} unreachable: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from None
        if refused:
            # Others got it, so it is not retried (they would get it twice); the outcome says who.
            log.warning("email: %d recipient(s) refused for %s", len(refused), msg["Message-ID"])
        return list(refused)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text
