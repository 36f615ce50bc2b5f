"""Receipts: proof that an event was logged, checkable offline with only the log's public key.

A receipt carries the leaf index, the leaf hash, the event's canonical bytes, the signed
checkpoint and the inclusion proof. It serialises as JSON and also as a C2SP tlog-proof.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sovra.audit.merkle import leaf_hash
from sovra.audit.note import (
    Checkpoint,
    NoteError,
    NoteVerifier,
    open_checkpoint,
    verify_cosignatures,
)
from sovra.audit.verify import ProofError, verify_consistency, verify_inclusion
from sovra.errors import Invalid

RECEIPT_FORMAT = "sovra.audit.receipt/v1"


class ReceiptError(Invalid, ValueError):
    """The receipt is malformed or does not prove what it claims."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ReceiptError(f"receipt field {what} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ReceiptError(f"receipt field {what} is not valid base64") from None


@dataclass(frozen=True)
class Receipt:
    index: int
    leaf_hash: bytes
    checkpoint: str
    proof: tuple[bytes, ...]
    entry: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": RECEIPT_FORMAT,
            "index": self.index,
            "leaf_hash": _b64(self.leaf_hash),
            "checkpoint": self.checkpoint,
            "inclusion_proof": [_b64(h) for h in self.proof],
        }
        if self.entry is not None:
            out["entry"] = _b64(self.entry)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_tlog_proof(self) -> str:
        """The c2sp.org/tlog-proof@v1 text form (the entry rides in the `extra` line)."""
        lines = ["c2sp.org/tlog-proof@v1"]
        if self.entry is not None:
            lines.append("extra " + _b64(self.entry))
        lines.append(f"index {self.index}")
        lines.extend(_b64(h) for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def from_dict(cls, data: object) -> Receipt:
        if not isinstance(data, dict):
            raise ReceiptError("receipt must be a JSON object")
        inner = data.get("receipt")
        if "format" not in data and isinstance(inner, dict):
            # A saved `sovra ask --json` answer or an export line: the receipt rides inside.
            data = inner
        if data.get("format") != RECEIPT_FORMAT:
            raise ReceiptError(f"not a receipt: format must be {RECEIPT_FORMAT!r}")
        index = data.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ReceiptError("receipt index must be a non-negative integer")
        checkpoint = data.get("checkpoint")
        if not isinstance(checkpoint, str):
            raise ReceiptError("receipt checkpoint must be a signed note string")
        proof = data.get("inclusion_proof")
        if not isinstance(proof, list):
            raise ReceiptError("receipt inclusion_proof must be a list")
        entry = data.get("entry")
        return cls(
            index=index,
            leaf_hash=_unb64(data.get("leaf_hash"), "leaf_hash"),
            checkpoint=checkpoint,
            proof=tuple(_unb64(h, "inclusion_proof") for h in proof),
            entry=None if entry is None else _unb64(entry, "entry"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReceiptError(f"receipt is not valid JSON: {exc}") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a valid receipt proves."""

    origin: str
    index: int
    tree_size: int
    root: bytes
    leaf_hash: bytes
    record: dict[str, Any] | None
    signed_by: list[str] = field(default_factory=list)
    witnesses: list[str] = field(default_factory=list)


def _verifiers(keys: str | Sequence[str] | Sequence[NoteVerifier]) -> list[NoteVerifier]:
    items: Sequence[str | NoteVerifier] = [keys] if isinstance(keys, str) else keys
    out: list[NoteVerifier] = []
    for item in items:
        if isinstance(item, NoteVerifier):
            out.append(item)
            continue
        for line in item.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                out.append(NoteVerifier.parse(line))
    return out


def verify_receipt(
    receipt: str | bytes | Receipt,
    public_key: str | Sequence[str] | Sequence[NoteVerifier],
    *,
    origin: str | None = None,
    witnesses: str | Sequence[str] | Sequence[NoteVerifier] = (),
    min_witnesses: int = 0,
) -> VerifiedReceipt:
    """Check a receipt offline: signature by a trusted log key, optional witness quorum,
    leaf hash of the embedded entry, and the inclusion proof. Raises ReceiptError."""
    try:
        rec = receipt if isinstance(receipt, Receipt) else Receipt.from_json(receipt)
        keys = _verifiers(public_key)
        checkpoint, signers = open_checkpoint(rec.checkpoint, keys, origin)
        good_witnesses = verify_cosignatures(rec.checkpoint, _verifiers(witnesses))
    except NoteError as exc:
        raise ReceiptError(str(exc)) from None
    if len(good_witnesses) < min_witnesses:
        raise ReceiptError(
            f"checkpoint has {len(good_witnesses)} valid witness cosignatures, "
            f"{min_witnesses} required"
        )
    record: dict[str, Any] | None = None
    if rec.entry is not None:
        if leaf_hash(rec.entry) != rec.leaf_hash:
            raise ReceiptError("the receipt's entry does not hash to its leaf hash")
        try:
            loaded = json.loads(rec.entry)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ReceiptError("the receipt's entry is not JSON") from None
        record = loaded if isinstance(loaded, dict) else None
    try:
        verify_inclusion(rec.index, checkpoint.size, rec.leaf_hash, rec.proof, checkpoint.root)
    except ProofError as exc:
        raise ReceiptError(str(exc)) from None
    return VerifiedReceipt(
        origin=checkpoint.origin,
        index=rec.index,
        tree_size=checkpoint.size,
        root=checkpoint.root,
        leaf_hash=rec.leaf_hash,
        record=record,
        signed_by=[str(s) for s in signers],
        witnesses=[str(w) for w in good_witnesses],
    )


def verify_checkpoint_update(
    old_checkpoint: str,
    new_checkpoint: str,
    proof: Sequence[bytes],
    public_key: str | Sequence[str] | Sequence[NoteVerifier],
) -> Checkpoint:
    """Accept `new_checkpoint` only if it extends the trusted `old_checkpoint` (both signed by
    the log and linked by the consistency proof). This is what catches a split view: a store
    that showed one reader a different tree cannot prove consistency with what it showed
    another. Returns the new checkpoint; raises ReceiptError."""
    keys = _verifiers(public_key)
    try:
        old, _ = open_checkpoint(old_checkpoint, keys)
        new, _ = open_checkpoint(new_checkpoint, keys, old.origin)
    except NoteError as exc:
        raise ReceiptError(str(exc)) from None
    if old.size == 0:
        return new
    try:
        verify_consistency(old.size, new.size, old.root, new.root, proof)
    except ProofError as exc:
        raise ReceiptError(
            f"checkpoint {new.size} does not extend checkpoint {old.size}: {exc}"
        ) from None
    return new
