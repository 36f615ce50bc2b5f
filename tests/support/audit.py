"""Audit test helpers: a log factory for both backends and a sample event maker.

The PostgreSQL leg uses $SOVRA_TEST_POSTGRES_URL (set by .ci/run) and a fresh schema per test;
without the URL it is skipped locally but fails under CI=true, so CI cannot silently drop it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sovra.audit import AuditEvent, AuditLog, ResourceRef

PG_ENV = "SOVRA_TEST_POSTGRES_URL"


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {PG_ENV} is not set: the PostgreSQL audit tests must run")
        pytest.skip(f"{PG_ENV} not set (start PostgreSQL as .ci/run does)")
    return url


class LogFactory:
    """Opens logs on one backend; a PostgreSQL log gets its own schema, dropped afterwards."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.home = tmp_path / "home"
        self.url = postgres_url() if kind == "postgres" else None
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self._opened: list[AuditLog] = []

    def open(self, **kwargs: object) -> AuditLog:
        log = AuditLog.open(self.home, self.url, schema=self.schema, **kwargs)  # type: ignore[arg-type]
        self._opened.append(log)
        return log

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (CLI, crash worker) to open the same log."""
        env = dict(os.environ)
        if self.url:
            env["SOVRA_AUDIT_URL"] = self.url
            env["SOVRA_AUDIT_SCHEMA"] = self.schema
        return env

    def cleanup(self) -> None:
        for log in self._opened:
            # Closing twice is harmless; a test may already have closed it.
            with contextlib.suppress(Exception):
                log.close()
        if self.url:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


def make_event(i: int, **overrides: object) -> AuditEvent:
    fields: dict[str, object] = {
        "actor": "svc:answer",
        "action": "ask",
        "resources": (ResourceRef(id=f"files:doc-{i}", hash="sha256:" + f"{i:064x}"),),
        "policy_ids": ("policy-ask",),
        "decision": "allow",
        "endpoint": "local-llama",
        "jurisdiction": "eu",
        "request_id": f"req-{i}",
        "details": {"n": i},
    }
    fields.update(overrides)
    return AuditEvent.model_validate(fields)


EventMaker = Callable[..., AuditEvent]
