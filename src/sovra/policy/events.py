"""Policy and routing decisions as audit events (sovra.audit), allow and deny alike."""

from __future__ import annotations

from collections.abc import Sequence

from sovra.audit import AuditEvent, ResourceRef
from sovra.domain import Chunk, Principal, content_hash
from sovra.policy.engine import PolicyDecision
from sovra.policy.router import Decision


def chunk_refs(chunks: Sequence[Chunk]) -> tuple[ResourceRef, ...]:
    """Chunks by id and content hash: the log proves what was sent without holding it."""
    return tuple(ResourceRef(id=c.id, hash=content_hash(c.text)) for c in chunks)


def decision_event(
    principal: Principal,
    decision: Decision,
    chunks: Sequence[Chunk] = (),
    *,
    request_id: str | None = None,
) -> AuditEvent:
    """The audit event of one routing decision (`send_to_endpoint`)."""
    chosen = decision.chosen
    details: dict[str, object] = {
        "policy_version": decision.policy_version,
        "classification": decision.classification,
        "residencies": list(decision.residencies),
        "contains_pii": decision.contains_pii,
        "redact": decision.redact,
        "categories": list(decision.categories),
        "rejected": [
            {"endpoint": r.endpoint, "reason": r.reason, "policy_ids": list(r.policy_ids)}
            for r in decision.rejected
        ],
    }
    if chosen is not None:
        details["hosting"] = chosen.hosting
    if decision.refusal:
        details["refusal"] = decision.refusal
    return AuditEvent(
        actor=f"user:{principal.id}",
        action="send_to_endpoint",
        resources=chunk_refs(chunks),
        policy_ids=decision.policy_ids,
        decision="allow" if chosen is not None else "deny",
        endpoint=chosen.name if chosen is not None else None,
        jurisdiction=chosen.jurisdiction if chosen is not None else None,
        outcome="routed" if chosen is not None else "refused",
        request_id=request_id,
        details=details,  # type: ignore[arg-type]
        subject=principal.id,  # the actor is sealed under the person's key (erasable)
    )


def policy_event(
    principal: Principal,
    action: str,
    resource: str,
    verdict: PolicyDecision,
    *,
    resource_hash: str | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """The audit event of one plain policy decision (ask, search, export, …)."""
    return AuditEvent(
        actor=f"user:{principal.id}",
        action=action,
        resources=(ResourceRef(id=resource, hash=resource_hash or content_hash(resource)),),
        policy_ids=verdict.policy_ids,
        decision=verdict.decision,  # type: ignore[arg-type]
        outcome="allowed" if verdict.allowed else "denied",
        request_id=request_id,
        details={"policy_version": verdict.version, "errors": list(verdict.errors)},
        subject=principal.id,
    )
