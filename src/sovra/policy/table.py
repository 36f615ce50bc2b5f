"""Decision tables: a YAML file of expected policy decisions, run by `sovra policy test`.

A table is self-contained, so a compliance officer can check a policy change against it without
a running installation: it names users (and groups), sources, documents, workflows and
endpoints, then lists cases `{as, action, resource, expect}` with optional `policy` (an @id
that must be among the deciding ones) and, for `send_to_endpoint`, the data being sent
(`classification`, `residency`, `pii`, `categories`). Resources are written `workspace`,
`source:<name>`, `document:<id>`, `endpoint:<name>` or `workflow:<name>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovra.config import Config, ConfigError, EndpointConfig
from sovra.domain import ClassificationScale, DomainError, Principal, validate_access
from sovra.errors import Invalid
from sovra.policy.engine import Entity, PolicyDecision, PolicyEngine, PolicyError, Request
from sovra.policy.entities import (
    WORKSPACE,
    document_entity,
    endpoint_entity,
    user_entity,
    workflow_entity,
)
from sovra.policy.router import send_context
from sovra.sources.labels import resolve_labels


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Labelled(_Strict):
    access: tuple[str, ...] = ()
    classification: str = "internal"
    residency: str = "*"


class DocumentSpec(Labelled):
    source: str


class WorkflowSpec(_Strict):
    access: tuple[str, ...] = ()


class Case(_Strict):
    as_: str = Field(alias="as")
    action: str
    resource: str = "workspace"
    expect: Literal["allow", "deny"]
    policy: str | None = None
    classification: str = "internal"
    residency: tuple[str, ...] = ()
    pii: bool = False
    categories: tuple[str, ...] = ()
    note: str = ""


class DecisionTable(_Strict):
    classifications: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
    region: str = "eu"
    users: dict[str, tuple[str, ...]] = {}
    sources: dict[str, Labelled] = {}
    documents: dict[str, DocumentSpec] = {}
    workflows: dict[str, WorkflowSpec] = {}
    endpoints: tuple[EndpointConfig, ...] = ()
    cases: tuple[Case, ...]


class TableError(Invalid):
    """The table cannot be read; the message names the file and the entry."""


def load_table(path: Path) -> DecisionTable:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TableError(f"{path}: not valid YAML: {exc}") from None
    try:
        return DecisionTable.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise TableError(f"{path}: {loc or '(top level)'}: {err['msg']}") from None


@dataclass(frozen=True)
class Resolver:
    """Turns `kind:name` resource strings into Cedar entities from a known world."""

    scale: ClassificationScale
    region: str
    sources: dict[str, Labelled]
    documents: dict[str, DocumentSpec]
    workflows: dict[str, WorkflowSpec]
    endpoints: dict[str, EndpointConfig]

    def entity(self, resource: str) -> Entity:
        kind, _, name = resource.partition(":")
        if kind == "workspace":
            return WORKSPACE
        try:
            if kind == "source":
                src = self.sources[name]
                return Entity(
                    "Source",
                    name,
                    {
                        "access": set(validate_access(src.access)),
                        "classification": src.classification,
                        "residency": src.residency,
                    },
                )
            if kind == "document":
                doc = self.documents[name]
                return document_entity(
                    name, doc.source, doc.access, doc.classification, doc.residency
                )
            if kind == "endpoint":
                return endpoint_entity(self.endpoints[name], self.scale)
            if kind == "workflow":
                return workflow_entity(name, self.workflows[name].access)
        except KeyError:
            raise PolicyError(f"unknown {kind} {name!r} in resource {resource!r}") from None
        raise PolicyError(
            f"resource {resource!r} is not understood; write workspace, source:<name>,"
            " document:<id>, endpoint:<name> or workflow:<name>"
        )

    def region_of(self, endpoint: EndpointConfig) -> str:
        if endpoint.jurisdiction in ("local", "") and endpoint.hosting == "on_prem":
            return self.region
        return endpoint.jurisdiction


def build_request(
    resolver: Resolver,
    principal: Principal,
    action: str,
    resource: str,
    *,
    classification: str = "internal",
    residency: tuple[str, ...] = (),
    pii: bool = False,
    categories: tuple[str, ...] = (),
) -> Request:
    target = resolver.entity(resource)
    context: dict[str, object] | None = None
    if action == "send_to_endpoint":
        if target.type != "Endpoint":
            raise PolicyError("send_to_endpoint needs an endpoint:<name> resource")
        context = send_context(
            resolver.scale,
            classification,
            residency,
            resolver.region_of(resolver.endpoints[target.id]),
            contains_pii=pii,
            categories=categories,
        )
    return Request(user_entity(principal), action, target, context)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    verdict: PolicyDecision
    passed: bool
    problem: str = ""


def run_table(engine: PolicyEngine, table: DecisionTable) -> list[CaseResult]:
    try:
        scale = ClassificationScale(table.classifications)
    except DomainError as exc:
        raise TableError(str(exc)) from None
    resolver = Resolver(
        scale,
        table.region,
        dict(table.sources),
        dict(table.documents),
        dict(table.workflows),
        {e.name: e for e in table.endpoints},
    )
    results: list[CaseResult] = []
    for i, case in enumerate(table.cases):
        if case.as_ not in table.users:
            raise TableError(f"cases[{i}]: unknown user {case.as_!r}; list it under users")
        principal = Principal(case.as_, frozenset(table.users[case.as_]))
        try:
            request = build_request(
                resolver,
                principal,
                case.action,
                case.resource,
                classification=case.classification,
                residency=case.residency,
                pii=case.pii,
                categories=case.categories,
            )
        except PolicyError as exc:
            raise TableError(f"cases[{i}]: {exc}") from None
        verdict = engine.decide(request)
        problem = ""
        if verdict.decision != case.expect:
            problem = f"expected {case.expect}, got {verdict.decision}"
        elif case.policy is not None and case.policy not in verdict.policy_ids:
            problem = f"expected policy {case.policy}, decided by {', '.join(verdict.policy_ids)}"
        results.append(CaseResult(case, verdict, not problem, problem))
    return results


def document_spec(config: Config, doc_id: str) -> DocumentSpec:
    source_name, _, external = doc_id.partition(":")
    try:
        source = config.source(source_name)
    except ConfigError as exc:
        raise PolicyError(f"document {doc_id!r}: {exc}") from None
    labels = resolve_labels(
        path=external,
        access=source.access,
        classification=source.classification,
        residency=source.residency,
        rules=source.rules,
        scale=config.scale,
    )
    return DocumentSpec(
        source=source_name,
        access=labels.access,
        classification=labels.classification,
        residency=labels.residency,
    )


def config_resolver(config: Config, document: str | None = None) -> Resolver:
    """Resources as the configuration describes them (sources, endpoints).

    Raises `PolicyError` when `document` names a source the configuration does not have.
    """
    sources = {
        s.name: Labelled(access=s.access, classification=s.classification, residency=s.residency)
        for s in config.sources
    }
    documents = {document: document_spec(config, document)} if document else {}
    return Resolver(
        config.scale,
        config.workspace.region,
        sources,
        documents,
        {},
        {e.name: e for e in config.endpoints},
    )
