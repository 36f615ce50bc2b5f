"""`policy check` for administrators over HTTP: the decision the Cedar engine would make for a
principal, an action and a resource, with the policies that decided it and what would allow it.

The same resolver and engine as `sovra policy check` (`sovra.cli.policy`), reading the same
policies, configuration and directory, so the answer is exactly what a request would get.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Field

from sovra.config import Config
from sovra.directory import Directory, DirectoryError
from sovra.domain import Principal
from sovra.errors import Invalid
from sovra.policy.engine import DEFAULT_DENY, PolicyEngine, PolicyError
from sovra.policy.table import WorkflowSpec, build_request, config_resolver
from sovra.server.text import Text

Action = Literal[
    "search", "ask", "send_to_endpoint", "run_workflow", "approve", "export", "erase", "administer"
]
Name = Annotated[Text, Field(min_length=1, max_length=200)]


class PolicyCheckRequest(BaseModel):
    user: Name = Field(description="A user of the directory, or any name with `groups`.")
    groups: list[Name] | None = Field(
        default=None,
        max_length=50,
        description="Act as an ad-hoc user in these groups instead of the directory entry.",
    )
    action: Action
    resource: Text = Field(
        default="workspace",
        max_length=1000,
        description="workspace, source:<name>, document:<source>:<id>, endpoint:<name>, "
        "workflow:<name>",
    )
    workflow_access: list[Name] = Field(default_factory=list, max_length=50)
    classification: Name = Field(
        default="internal", description="send_to_endpoint: strictest classification."
    )
    residency: list[Name] = Field(default_factory=list, max_length=20)
    pii: bool = False
    categories: list[Name] = Field(default_factory=list, max_length=20)


ACTIONS: tuple[str, ...] = get_args(Action)


def active_policies(config: Config) -> tuple[str, list[dict[str, Any]]]:
    """The active policy set's version and its policies (id, effect, file, line)."""
    try:
        engine = PolicyEngine.for_home(config.home)
    except PolicyError as exc:
        raise PolicyCheckError(f"policies in {config.home / 'policies'}: {exc}") from None
    rows = [
        {"id": p.id, "effect": p.effect, "file": p.file, "line": p.line}
        for p in sorted(engine.policy_set.policies.values(), key=lambda p: (p.file, p.line))
    ]
    return engine.policy_set.version, rows


class PolicyCheckError(Invalid):
    """The request cannot be checked (unknown user, source, endpoint…); safe to show."""


def check_policy(config: Config, body: PolicyCheckRequest) -> dict[str, Any]:
    try:
        engine = PolicyEngine.for_home(config.home)
    except PolicyError as exc:
        raise PolicyCheckError(f"policies in {config.home / 'policies'}: {exc}") from None
    if body.groups:
        principal = Principal(body.user, frozenset(body.groups))
    else:
        try:
            principal = Directory.in_home(config.home).principal(body.user)
        except DirectoryError as exc:
            raise PolicyCheckError(str(exc)) from None
    kind, _, name = body.resource.partition(":")
    try:
        resolver = config_resolver(config, name if kind == "document" else None)
    except PolicyError as exc:
        raise PolicyCheckError(str(exc)) from None
    if kind == "workflow":
        resolver.workflows[name] = WorkflowSpec(access=tuple(body.workflow_access))
    try:
        request = build_request(
            resolver,
            principal,
            body.action,
            body.resource,
            classification=body.classification,
            residency=tuple(body.residency),
            pii=body.pii,
            categories=tuple(body.categories),
        )
        verdict = engine.decide(request)
    except PolicyError as exc:
        raise PolicyCheckError(str(exc)) from None
    policies = []
    for pid in verdict.policy_ids:
        info = engine.policy_set.by_id(pid)
        policies.append(
            {"id": pid, "effect": info.effect, "file": info.file, "line": info.line}
            if info is not None
            else {
                "id": pid,
                "effect": "forbid" if pid == DEFAULT_DENY else "",
                "file": "",
                "line": 0,
            }
        )
    return {
        "principal": principal.id,
        "groups": sorted(principal.groups),
        "action": body.action,
        "resource": body.resource,
        "decision": verdict.decision,
        "allowed": verdict.allowed,
        "policy_ids": list(verdict.policy_ids),
        "policies": policies,
        "policy_version": verdict.version,
        "default_deny": DEFAULT_DENY in verdict.policy_ids,
        "advice": list(verdict.advice),
        "errors": list(verdict.errors),
    }
