"""`sovra erase --subject`: a data subject's erasure across every store of the data directory.

The audit log is crypto-shredded (the subject's key destroyed, every proof still verifies);
the other stores are rewritten so the subject's id, name, e-mail and typed text are gone from
their rows, free pages and WAL files alike (docs/audit.md lists them). Only stores that exist
are opened: erasing never creates one.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sovra.config import Config
from sovra.directory import Directory


def erase_stores(config: Config, subject: str) -> dict[str, Any]:
    """Erase `subject` from every store except the audit log; returns what changed, by store
    (counts only: nothing personal)."""
    home = config.home
    # One pseudonym per erasure: the person's votes and ratings still count, as nobody.
    pseudonym = "erased:" + secrets.token_hex(6)
    report: dict[str, Any] = {}
    directory = Directory.in_home(home)
    try:
        if directory.erase_subject(subject):  # user, memberships, history rows, old JSON backup
            report["directory"] = 1
    finally:
        directory.close()
    runs: list[str] = []
    shared = config.shared_database_url()
    if (home / "flows-state.db").exists() or shared:
        from sovra.flows.store import FlowStore

        store = FlowStore.in_home(home, shared)
        try:
            changed = store.erase_subject(subject, pseudonym)
        finally:
            store.close()
        runs = changed["runs"]
        report["flows"] = {"runs": len(runs), "votes": changed["votes"]}
    if runs:
        report["actions"] = _forget_actions(home, runs, shared)
    feedback, legacy = home / "feedback.sqlite", home / "server" / "accounts.sqlite"
    if feedback.exists() or legacy.exists() or shared:
        from sovra.answer.feedback import FeedbackStore

        fb = FeedbackStore.in_home(home, shared)
        try:
            report["feedback"] = fb.erase_user(subject, pseudonym)
        finally:
            fb.close()
    if (home / "recent-questions.sqlite").exists() or shared:
        from sovra.answer.recent import RecentQuestions

        recent = RecentQuestions.in_home(home, shared)
        try:
            report["recent_questions"] = recent.erase_user(subject)
        finally:
            recent.close()
    if (home / "usage" / "usage.sqlite").exists() or config.shared_database_url():
        from sovra.policy.usage import UsageLedger

        with UsageLedger.in_home(home, config.shared_database_url()) as ledger:
            report["usage"] = ledger.erase_principal(subject)
    if legacy.exists() or config.shared_database_url():
        from sovra.server.accounts import AccountStore

        accounts = AccountStore.for_config(config)
        try:
            report["accounts"] = accounts.erase_user(subject)
        finally:
            accounts.close()
    return report


def _forget_actions(home: Path, runs: list[str], shared: str | None) -> int:
    """The recorded outcomes of the subject's runs' actions (recipients, replies), in the
    home's files or, with `[workspace] database_url`, the shared database."""
    from sovra.flows.actions import DeliveryLedger, TicketStore

    changed = 0
    for path, kind in (
        (home / "action-ledger.db", DeliveryLedger),
        (home / "tickets.db", TicketStore),
    ):
        if path.exists() or shared:
            store = kind.in_home(home, shared)
            try:
                changed += store.forget_runs(runs)
            finally:
                store.close()
    return changed
