"""Action adapters: what a workflow may change in the world.

Three adapters, each behind the `ActionAdapter` contract of `flows.base`:

- `TicketStore` (`ticket_store`): rows in `<home>/tickets.db` (or the `sovra_tickets` schema of
  the shared PostgreSQL database), a stand-in for a helpdesk. The change and its idempotency
  record are written in one transaction, under one write lock for all replicas, so "exactly
  once" holds even across `kill -9`: either both are on disk or neither is.
- `WebhookAction` (`webhook`): a JSON POST through the egress guard, which allows only
  `[flows] webhook_hosts`. A ledger (`<home>/action-ledger.db`, or the `sovra_actions`
  schema of the shared database, seen by every replica) records delivered keys, so a replay
  after success does not POST again. A crash *between* "the POST succeeded" and "the ledger row is written"
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
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Column, Engine, MetaData, Table, Text, func, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import DBAPIError

from sovra.config import SmtpConfig
from sovra.egress import EgressDenied, EgressGuard, guarded_client
from sovra.flows.base import ActionError, ActionResult
from sovra.storage import erasing_rows, store_engine, store_schema, upsert, write_lock

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


TICKETS_SCHEMA = "sovra_tickets"
TICKETS_FILE = "tickets.db"
tickets_metadata = MetaData()
tickets_t = Table(
    "tickets",
    tickets_metadata,
    Column("ticket_id", Text, primary_key=True),
    *(
        Column(name, Text, nullable=False, server_default="new" if name == "status" else "")
        for name in TICKET_FIELDS
    ),
    Column("updated_at", Text, nullable=False),
    Column("history", Text, nullable=False, server_default="[]"),
)
action_keys_t = Table(
    "action_keys",
    tickets_metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("params_sha256", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("at", Text, nullable=False),
)


class TicketStore:
    """`ticket_store`: create or update tickets; `upsert` with the same key twice changes nothing."""

    name = "ticket_store"
    changes: frozenset[str] = frozenset({"ticket.create", "ticket.update"})

    def __init__(self, target: Path | str | Engine) -> None:
        self.path = target if isinstance(target, Path) else None
        self.engine = store_engine(target, TICKETS_SCHEMA, tickets_metadata, synchronous="FULL")
        self._lock_name = f"{store_schema(self.engine) or TICKETS_SCHEMA}.tickets"
        self._lock = threading.Lock()

    @classmethod
    def in_home(cls, home: Path, url: str | None = None) -> TicketStore:
        """The home's ticket store, or the shared database's with `[workspace] database_url`."""
        return cls(url if url else home / TICKETS_FILE)

    def close(self) -> None:
        return None  # no connection is held between calls

    def forget_runs(self, run_ids: Sequence[str]) -> int:
        """Erasure: the outcomes recorded for these runs' keys are replaced. The tickets
        themselves are the ticket system's records (this store stands in for one)."""
        with self._lock:
            return forget_outcomes(self.engine, action_keys_t, run_ids)

    def execute(self, params: Mapping[str, Any], *, idempotency_key: str) -> ActionResult:
        key = _check_key(idempotency_key)
        ticket_id, fields = self._parse(params)
        digest = _params_digest(params)
        try:
            return self._execute(key, ticket_id, fields, digest)
        except DBAPIError as err:
            # The driver's own error (sqlite3's, psycopg's), as before SQLAlchemy: it is what
            # a run's failure shows, without SQLAlchemy's statement dump.
            if isinstance(err.orig, Exception):
                raise err.orig from None
            raise

    def _execute(
        self, key: str, ticket_id: str, fields: dict[str, str], digest: str
    ) -> ActionResult:
        k, t = action_keys_t.c, tickets_t.c
        # The write lock (every replica's) is taken before the idempotency check, so two
        # processes cannot both pass it.
        with self._lock, write_lock(self.engine, self._lock_name) as conn:
            seen = conn.execute(
                select(k.params_sha256, k.outcome).where(k.idempotency_key == key)
            ).first()
            if seen is not None:
                if seen[0] != digest:
                    log.warning("ticket_store: key %s replayed with different parameters", key)
                return ActionResult(self.name, key, json.loads(seen[1]), replayed=True)
            row = conn.execute(
                select(*(t[f] for f in TICKET_FIELDS), t.history).where(t.ticket_id == ticket_id)
            ).first()
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
                upsert(conn, tickets_t, ["ticket_id"]).values(
                    ticket_id=ticket_id,
                    **{f: current[f] for f in TICKET_FIELDS},
                    updated_at=now,
                    history=json.dumps(history),
                )
            )
            outcome = {
                "ticket_id": ticket_id,
                "created": created,
                "changed": changed,
                "status": current["status"],
            }
            conn.execute(
                insert(action_keys_t).values(
                    idempotency_key=key, params_sha256=digest, outcome=json.dumps(outcome), at=now
                )
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
        with self._lock, self.engine.connect() as conn:
            row = conn.execute(_TICKET_COLUMNS.where(tickets_t.c.ticket_id == ticket_id)).first()
        return None if row is None else _ticket(tuple(row))

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Ticket]:
        """Most recently updated first."""
        t = tickets_t.c
        stmt = _TICKET_COLUMNS
        if status is not None:
            stmt = stmt.where(t.status == status)
        stmt = stmt.order_by(t.updated_at.desc(), t.ticket_id).limit(limit)
        with self._lock, self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_ticket(tuple(r)) for r in rows]


_TICKET_COLUMNS = select(
    tickets_t.c.ticket_id,
    *(tickets_t.c[f] for f in TICKET_FIELDS),
    tickets_t.c.updated_at,
    tickets_t.c.history,
)


def _ticket(row: tuple[Any, ...]) -> Ticket:
    values = dict(zip(("ticket_id", *TICKET_FIELDS, "updated_at"), row[:-1], strict=True))
    return Ticket(**values, history=json.loads(row[-1]))


# -- delivery ledger (webhook, e-mail) ---------------------------------------------------------

LEDGER_SCHEMA = "sovra_actions"
LEDGER_FILE = "action-ledger.db"
ledger_metadata = MetaData()
delivered_t = Table(
    "delivered",
    ledger_metadata,
    Column("adapter", Text, primary_key=True),
    Column("idempotency_key", Text, primary_key=True),
    Column("outcome", Text, nullable=False),
    Column("at", Text, nullable=False),
)


class DeliveryLedger:
    """Keys an adapter has delivered, with their outcome: a replay returns it instead of re-sending."""

    def __init__(self, target: Path | str | Engine) -> None:
        self.path = target if isinstance(target, Path) else None
        self.engine = store_engine(target, LEDGER_SCHEMA, ledger_metadata, synchronous="FULL")
        self._lock = threading.Lock()

    @classmethod
    def in_home(cls, home: Path, url: str | None = None) -> DeliveryLedger:
        """The home's ledger, or the shared database's with `[workspace] database_url`."""
        return cls(url if url else home / LEDGER_FILE)

    def get(self, adapter: str, key: str) -> dict[str, Any] | None:
        d = delivered_t.c
        with self._lock, self.engine.connect() as conn:
            outcome = conn.execute(
                select(d.outcome).where(d.adapter == adapter, d.idempotency_key == key)
            ).scalar_one_or_none()
        return None if outcome is None else dict(json.loads(outcome))

    def record(self, adapter: str, key: str, outcome: Mapping[str, Any]) -> None:
        """The first outcome recorded for a key is kept (the primary key holds it on every
        replica: a second record of the same delivery changes nothing)."""
        with self._lock, self.engine.begin() as conn:
            stmt = upsert(conn, delivered_t, ["adapter", "idempotency_key"]).insert_values(
                adapter=adapter, idempotency_key=key, outcome=json.dumps(dict(outcome)), at=_now()
            )
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["adapter", "idempotency_key"]))

    def forget_runs(self, run_ids: Sequence[str]) -> int:
        """Erasure: the outcomes recorded for these runs' actions (recipients, replies) are
        replaced; the keys stay, so a replay still sends nothing twice."""
        with self._lock:
            return forget_outcomes(self.engine, delivered_t, run_ids)

    def close(self) -> None:
        return None  # no connection is held between calls


def forget_outcomes(engine: Engine, table: Table, run_ids: Sequence[str]) -> int:
    """Replace the recorded outcomes of idempotency keys `<run id>:<step>` of these runs."""
    changed = 0
    key = table.c.idempotency_key
    with erasing_rows(engine, table.name) as conn:
        for run_id in run_ids:
            changed += conn.execute(
                sql_update(table)
                .where(func.substr(key, 1, len(run_id) + 1) == run_id + ":")
                .values(outcome=json.dumps({"erased": True}))
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
