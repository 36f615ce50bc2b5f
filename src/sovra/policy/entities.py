"""Cedar entities built from sovra's own types (Principal, sources, endpoints), in one place so
every caller describes the same thing to the policy engine the same way."""

from __future__ import annotations

from collections.abc import Iterable

from sovra.config import EndpointConfig, SourceConfig
from sovra.domain import ClassificationScale, Principal, validate_access
from sovra.policy.engine import Entity, labels_at_most

WORKSPACE = Entity("Workspace", "default")


def user_entity(principal: Principal) -> Entity:
    return Entity(
        "User",
        principal.id,
        {"tokens": set(principal.access_tokens())},
        tuple(("Group", g) for g in sorted(principal.groups)),
    )


def source_entity(source: SourceConfig) -> Entity:
    return Entity(
        "Source",
        source.name,
        {
            "access": set(validate_access(source.access)),
            "classification": source.classification,
            "residency": source.residency,
        },
    )


def document_entity(
    document_id: str, source: str, access: Iterable[str], classification: str, residency: str
) -> Entity:
    return Entity(
        "Document",
        document_id,
        {
            "access": set(validate_access(tuple(access))),
            "classification": classification,
            "residency": residency,
        },
        (("Source", source),),
    )


def endpoint_entity(
    endpoint: EndpointConfig, scale: ClassificationScale, legal_basis: str = ""
) -> Entity:
    return Entity(
        "Endpoint",
        endpoint.name,
        {
            "kind": endpoint.kind,
            "hosting": endpoint.hosting,
            "jurisdiction": endpoint.jurisdiction,
            "pii": endpoint.pii,
            "cleared": labels_at_most(scale.labels, endpoint.max_classification),
            "legal_basis": legal_basis,
        },
    )


def workflow_entity(name: str, access: Iterable[str]) -> Entity:
    return Entity("Workflow", name, {"access": set(validate_access(tuple(access)))})
