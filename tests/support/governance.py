"""Governance test helpers: a workspace whose audit log holds a known set of events.

The events are the shapes sovra itself logs (routing decisions, answers, flow approvals,
overrides, kill switches, erasures), appended directly so the tests need no model or index;
`EXPECTED` says what a compliance report must count in them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sovra.audit import AuditEvent, ResourceRef
from sovra.config import load_config
from sovra.workspace import Workspace

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CONFIG = """
[workspace]
home = "data"
region = "eu-de"

[[sources]]
name = "handbook"
kind = "folder"
path = "handbook"
access = ["group:staff"]
classification = "internal"
residency = "eu"

[[sources]]
name = "tickets"
kind = "folder"
path = "tickets"
access = ["group:it-support"]
classification = "confidential"
residency = "eu"

[[endpoints]]
name = "local-llm"
kind = "openai"
model = "qwen"
base_url = "http://127.0.0.1:9/v1"
hosting = "on_prem"
jurisdiction = "local"
max_classification = "confidential"

[[endpoints]]
name = "eu-cloud"
kind = "openai"
model = "mistral"
base_url = "http://127.0.0.1:9/v1"
hosting = "regional_cloud"
jurisdiction = "eu-fr"
max_classification = "internal"
"""

EXPECTED = {
    "sends handbook→eu-cloud": 2,
    "sends tickets→local-llm": 1,
    "passages handbook→eu-cloud": 3,
    "refusals": 1,
    "denied by confidential-not-foreign": 1,
    "approval requests": 2,
    "approved": 1,
    "rejected": 1,
    "votes refused": 1,
    "overrides": 1,
    "kill switch on": 1,
    "erasures": 1,
    "tokens to eu-cloud": 300,
    "median decision seconds": 450.0,
    "max decision seconds": 600.0,
}


def _ref(cid: str) -> ResourceRef:
    return ResourceRef(id=cid, hash="sha256:" + "0" * 64)


def known_events() -> list[AuditEvent]:
    t = [T0 + timedelta(minutes=i) for i in range(40)]

    def send(
        i: int,
        endpoint: str,
        chunks: list[str],
        *,
        allow: bool = True,
        pii: bool = False,
        policies: tuple[str, ...] = ("send-within-policy",),
    ) -> AuditEvent:
        return AuditEvent(
            actor="user:alice",
            time=t[i],
            action="send_to_endpoint",
            resources=tuple(_ref(c) for c in chunks),
            policy_ids=policies,
            decision="allow" if allow else "deny",
            endpoint=endpoint if allow else None,
            jurisdiction={"eu-cloud": "eu-fr", "local-llm": "local"}[endpoint] if allow else None,
            outcome="routed" if allow else "refused",
            details={
                "policy_version": "sha256:aaaa",
                "contains_pii": pii,
                "classification": "internal",
            },
        )

    def ask(i: int, endpoint: str, chunks: list[str], tokens: int) -> AuditEvent:
        return AuditEvent(
            actor="user:alice",
            time=t[i],
            action="ask",
            resources=tuple(_ref(c) for c in chunks),
            decision="allow",
            endpoint=endpoint,
            jurisdiction="local",
            outcome="answered",
            details={
                "generation": "extractive" if endpoint == "extractive" else "generative",
                "tokens_in": tokens,
                "tokens_out": tokens // 2,
            },
            subject="alice",
            personal={"question": "what is the notice period?"},
        )

    def flow(
        i: int,
        action: str,
        outcome: str,
        run: str,
        *,
        decision: str = "allow",
        actor: str = "user:erin",
    ) -> AuditEvent:
        return AuditEvent(
            actor=actor,
            time=t[i],
            action=action,
            decision=decision,  # type: ignore[arg-type]
            outcome=outcome,
            details={"run_id": run, "workflow": "triage", "step_id": "approval"},
        )

    return [
        send(0, "eu-cloud", ["handbook:a.md#0", "handbook:a.md#1"]),
        ask(1, "eu-cloud", ["handbook:a.md#0"], 200),
        send(2, "eu-cloud", ["handbook:b.md#0"], pii=True),
        ask(3, "eu-cloud", ["handbook:b.md#0"], 100),
        send(4, "local-llm", ["tickets:t1#0"]),
        send(5, "eu-cloud", ["tickets:t2#0"], allow=False, policies=("confidential-not-foreign",)),
        ask(6, "extractive", ["handbook:a.md#1"], 0),
        flow(10, "flow.run", "started", "r1", actor="user:bob"),
        flow(11, "flow.approval.request", "waiting", "r1", actor="user:bob"),
        flow(12, "flow.approval.vote", "refused", "r1", decision="deny", actor="user:bob"),
        flow(16, "flow.approval.vote", "approved", "r1"),  # 5 min after the request
        flow(20, "flow.run", "started", "r2", actor="user:bob"),
        flow(21, "flow.approval.request", "waiting", "r2", actor="user:bob"),
        flow(31, "flow.approval.vote", "rejected", "r2"),  # 10 min after the request
        flow(32, "flow.control", "override", "r2", actor="user:root"),
        AuditEvent(
            actor="user:root",
            time=t[33],
            action="flow.kill_switch",
            outcome="on",
            details={"scope": "triage", "reason_sha256": "x"},
        ),
    ]


def known_site(root: Path) -> Workspace:
    """A workspace (no index, no model) whose log holds `known_events()` then an erasure."""
    (root / "handbook").mkdir(parents=True)
    (root / "tickets").mkdir()
    (root / "sovra.toml").write_text(CONFIG, encoding="utf-8")
    ws = Workspace.open(load_config(root / "sovra.toml"))
    ws.audit.append_many(known_events())
    ws.audit.erase_subject("alice")
    return ws
