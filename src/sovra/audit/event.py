"""The typed audit event and its canonical, possibly sealed, leaf encoding (RFC 8785 JSON).

An `AuditEvent` is what callers build. `seal()` turns it into the record stored as a Merkle
leaf: when the event names a data `subject`, the actor and the `personal` fields are encrypted
with that subject's key (AES-GCM) and only a random pseudonym stays in clear, so destroying the
key (crypto-shredding) erases them without touching the tree.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from typing import Any, Literal

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

RECORD_VERSION = 1
ERASED = "erased"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds, so that equal instants always encode equally."""
    text = value.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z"


class ResourceRef(BaseModel):
    """A resource touched by the event, by id and content hash (e.g. `sha256:...`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    hash: str = Field(min_length=1)


class AuditEvent(BaseModel):
    """One decision or effect (docs/concepts.md). `details` must not hold personal data: put that in
    `personal` and name the `subject` it belongs to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: str = Field(min_length=1)
    action: str = Field(min_length=1)
    time: datetime = Field(default_factory=_utc_now)
    resources: tuple[ResourceRef, ...] = ()
    policy_ids: tuple[str, ...] = ()
    decision: Literal["allow", "deny"] | None = None
    endpoint: str | None = None
    jurisdiction: str | None = None
    outcome: str = "ok"
    request_id: str | None = None
    details: dict[str, JsonValue] = Field(default_factory=dict)
    subject: str | None = None
    personal: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a timezone (use UTC)")
        return value.astimezone(UTC)

    def public_record(self) -> dict[str, Any]:
        """The fields stored in clear."""
        return {
            "v": RECORD_VERSION,
            "time": format_time(self.time),
            "actor": self.actor,
            "action": self.action,
            "resources": [{"id": r.id, "hash": r.hash} for r in self.resources],
            "policy_ids": list(self.policy_ids),
            "decision": self.decision,
            "endpoint": self.endpoint,
            "jurisdiction": self.jurisdiction,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "details": self.details,
        }


_SAFE_INT = (1 << 53) - 1


def _plain(value: Any) -> bool:
    """True when `value` holds only str keys, strings, safe integers, bools, null, lists and
    dicts: no floats, whose RFC 8785 number formatting Python's json does not reproduce."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                return False
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        elif isinstance(v, int):
            if not -_SAFE_INT <= v <= _SAFE_INT:
                return False
        else:
            return False
    return True


def canonical(value: Any, *, plain: bool | None = None) -> bytes:
    """RFC 8785 canonical JSON: the same record always gives the same bytes and leaf hash.

    `rfc8785` is the reference but is pure Python (~130 µs a record). For the common case —
    ASCII text and no floats — sorted-key compact `json.dumps` yields the identical bytes
    (same escapes, and code-point order equals UTF-16 order for ASCII keys), so it is used
    there; the property test in tests/audit checks the two agree. Anything else goes to
    `rfc8785`. `plain=True` lets a caller that knows its value's types skip the walk.
    """
    if plain if plain is not None else _plain(value):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if text.isascii():
            return text.encode("ascii")
    return bytes(rfc8785.dumps(value))


def seal(event: AuditEvent, pseudonym: str | None, key: bytes | None) -> bytes:
    """The canonical leaf bytes for `event`; personal parts encrypted when it has a subject."""
    record = event.public_record()
    # Every field but the free-form dicts is typed by the model (strings, lists of strings).
    plain = _plain(event.details) and _plain(event.personal)
    if event.subject is None:
        if event.personal:
            raise ValueError("personal fields need a subject whose key encrypts them")
        record["sealed"] = None
        return canonical(record, plain=plain)
    if pseudonym is None or key is None:
        raise ValueError("an event with a subject needs the subject's pseudonym and key")
    secret = canonical({"actor": event.actor, "personal": event.personal}, plain=plain)
    nonce = os.urandom(12)
    # The pseudonym is authenticated data: a ciphertext cannot be moved to another subject.
    ct = AESGCM(key).encrypt(nonce, secret, pseudonym.encode())
    record["actor"] = pseudonym
    record["sealed"] = {
        "subject": pseudonym,
        "nonce": base64.b64encode(nonce).decode(),
        "ct": base64.b64encode(ct).decode(),
    }
    return canonical(record, plain=plain)


def unseal(record: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """A readable view of a stored record: sealed parts decrypted, or marked erased."""
    view = {k: v for k, v in record.items() if k != "sealed"}
    sealed = record.get("sealed")
    if not isinstance(sealed, dict):
        return view
    view["subject"] = sealed.get("subject")
    if key is None:
        view["actor"] = ERASED
        view["personal"] = ERASED
        return view
    try:
        nonce = base64.b64decode(sealed["nonce"])
        ct = base64.b64decode(sealed["ct"])
        plain = AESGCM(key).decrypt(nonce, ct, str(sealed["subject"]).encode())
    except (InvalidTag, KeyError, ValueError, TypeError):
        view["actor"] = ERASED
        view["personal"] = ERASED
        return view
    secret = json.loads(plain)
    view["actor"] = secret["actor"]
    view["personal"] = secret["personal"]
    return view
