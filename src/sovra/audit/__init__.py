"""Signed, tamper-evident Merkle audit log: events in, receipts out.

The small stable surface the rest of sovra uses:

    log = AuditLog.open(home)                 # SQLite in <home>/audit, or PostgreSQL via url
    receipt = log.append(AuditEvent(actor="user:alice", action="ask", ...))
    verify_receipt(receipt.to_json(), log.public_key)   # offline, anywhere
    log.verify(); log.erase_subject("alice")
"""

from sovra.audit.check import VerifyReport
from sovra.audit.event import AuditEvent, ResourceRef
from sovra.audit.log import (
    RETENTION_MIN_DAYS,
    AuditError,
    AuditLog,
    LoggedEvent,
)
from sovra.audit.receipt import (
    Receipt,
    ReceiptError,
    VerifiedReceipt,
    verify_checkpoint_update,
    verify_receipt,
)

__all__ = [
    "RETENTION_MIN_DAYS",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "LoggedEvent",
    "Receipt",
    "ReceiptError",
    "ResourceRef",
    "VerifiedReceipt",
    "VerifyReport",
    "verify_checkpoint_update",
    "verify_receipt",
]
