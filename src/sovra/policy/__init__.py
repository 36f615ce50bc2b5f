"""Sovereignty: Cedar policies, the endpoint router, PII protection, the egress guard.

engine = PolicyEngine.for_home(home)            # <home>/policies/*.cedar, else the defaults
router = Router(engine, config.endpoints, config.scale, home_region=config.workspace.region)
decision = router.decide(principal, chunks, question=q)   # chosen / rejected / refusal
log.append(decision_event(principal, decision, chunks))

Heavier parts are imported from their modules so that `import sovra.policy` stays cheap
(Presidio pulls in spaCy): `sovra.policy.pii` (PiiDetector), `sovra.policy.redact` (Redactor),
`sovra.policy.wiring` (router_for, protect), `sovra.egress` (EgressGuard,
guarded_client, openai_http_client), `sovra.policy.usage` (UsageLedger),
(the command line lives in `sovra.cli.policy`, `sovra.cli.endpoints`, `sovra.cli.reports`).
"""

from sovra.policy.engine import (
    ACTIONS,
    DEFAULT_DENY,
    Entity,
    PolicyDecision,
    PolicyEngine,
    PolicyError,
    PolicySet,
    Request,
)
from sovra.policy.entities import (
    WORKSPACE,
    document_entity,
    endpoint_entity,
    source_entity,
    user_entity,
    workflow_entity,
)
from sovra.policy.events import decision_event, policy_event
from sovra.policy.router import Decision, Rejection, Router, send_context

__all__ = [
    "ACTIONS",
    "DEFAULT_DENY",
    "WORKSPACE",
    "Decision",
    "Entity",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyError",
    "PolicySet",
    "Rejection",
    "Request",
    "Router",
    "decision_event",
    "document_entity",
    "endpoint_entity",
    "policy_event",
    "send_context",
    "source_entity",
    "user_entity",
    "workflow_entity",
]
