"""The router: which endpoint (if any) may receive this request, and why (docs/architecture.md, "route").

It summarises what would be sent (strictest classification, residencies, PII found, data
categories), asks the policy engine about every registered endpoint in one batch, and returns
a `Decision`: the chosen endpoint in preference order, every rejected one with the rule that
rejected it, whether text must be pseudonymised first, or a refusal that names the rule and
says what would allow the request. No model call may happen without one.

In air-gap mode (`[egress] airgap = true`) an endpoint the egress guard would refuse (not
on-prem, or not on a local address) is rejected here already, under the rule id `airgap`, so
the refusal is decided, explained and audited like any other instead of failing at send time.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sovra.config import EndpointConfig
from sovra.domain import Chunk, ClassificationScale, Principal, may_process_in
from sovra.egress import EgressDenied, EgressGuard, Resolver, resolve
from sovra.policy.engine import PolicyDecision, PolicyEngine, Request, labels_at_most
from sovra.policy.entities import endpoint_entity, user_entity

Preference = Literal["on_prem_first", "cheapest", "fastest", "configured"]
PREFERENCES: tuple[str, ...] = ("on_prem_first", "cheapest", "fastest", "configured")
UNKNOWN_LABEL = "unknown"
AIRGAP_RULE = "airgap"
AIRGAP_ADVICE = (
    "in air-gap mode only on_prem endpoints on loopback or private addresses may be used;"
    " register one (or set [egress] airgap = false)"
)
_HOSTING_ORDER = {"on_prem": 0, "regional_cloud": 1, "foreign_cloud": 2}

PiiScan = Callable[[Sequence[str]], bool]
"""True when any of the texts holds personal data."""


@dataclass(frozen=True)
class Rejection:
    endpoint: str
    reason: str
    policy_ids: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The router's record of one routing decision (it goes to the audit log as is)."""

    chosen: EndpointConfig | None
    rejected: tuple[Rejection, ...]
    redact: bool
    refusal: str | None
    policy_ids: tuple[str, ...]
    policy_version: str
    classification: str
    residencies: tuple[str, ...]
    contains_pii: bool
    categories: tuple[str, ...] = ()
    considered: tuple[str, ...] = field(default_factory=tuple)

    @property
    def allowed(self) -> bool:
        return self.chosen is not None

    def to_json(self) -> dict[str, object]:
        return {
            "chosen": self.chosen.name if self.chosen else None,
            "jurisdiction": self.chosen.jurisdiction if self.chosen else None,
            "hosting": self.chosen.hosting if self.chosen else None,
            "redact": self.redact,
            "refusal": self.refusal,
            "policy_ids": list(self.policy_ids),
            "policy_version": self.policy_version,
            "classification": self.classification,
            "residencies": list(self.residencies),
            "contains_pii": self.contains_pii,
            "categories": list(self.categories),
            "considered": list(self.considered),
            "rejected": [
                {
                    "endpoint": r.endpoint,
                    "reason": r.reason,
                    "policy_ids": list(r.policy_ids),
                    "advice": list(r.advice),
                }
                for r in self.rejected
            ],
        }


def send_context(
    scale: ClassificationScale,
    classification: str,
    residencies: Iterable[str],
    region: str,
    *,
    contains_pii: bool = False,
    categories: Iterable[str] = (),
    sources: Iterable[str] = (),
) -> dict[str, object]:
    """The Cedar context of `send_to_endpoint` (schema type SendContext)."""
    if classification not in scale.labels:
        classification = UNKNOWN_LABEL
        at_least = set(scale.labels) | {UNKNOWN_LABEL}
    else:
        at_least = labels_at_most(scale.labels, classification)
    return {
        "classification": classification,
        "at_least": sorted(at_least),
        "residency_ok": all(may_process_in(r, region) for r in residencies),
        "contains_pii": contains_pii,
        "categories": sorted(set(categories)),
        "sources": sorted(set(sources)),
    }


class Router:
    """Decides, per request, which registered endpoint may receive the data.

    `home_region` is where on-prem endpoints process data when their jurisdiction is `local`
    (the workspace region). `categories` maps glob patterns over document ids (or source
    names) to data categories such as `hr`, which policies can test. `latency_ms` feeds the
    `fastest` preference (unmeasured endpoints go last).
    """

    def __init__(
        self,
        engine: PolicyEngine,
        endpoints: Sequence[EndpointConfig],
        scale: ClassificationScale,
        *,
        home_region: str,
        preference: Preference = "on_prem_first",
        categories: Mapping[str, str] | None = None,
        pii_scan: PiiScan | None = None,
        legal_basis: Mapping[str, str] | None = None,
        latency_ms: Mapping[str, float] | None = None,
        airgap: bool = False,
        resolver: Resolver = resolve,
    ) -> None:
        if preference not in PREFERENCES:
            raise ValueError(
                f"unknown routing preference {preference!r}; use one of {', '.join(PREFERENCES)}"
            )
        self.engine = engine
        self.endpoints = tuple(endpoints)
        self.scale = scale
        self.home_region = home_region
        self.preference = preference
        self.categories = dict(categories or {})
        self.pii_scan = pii_scan
        self.legal_basis = dict(legal_basis or {})
        self.latency_ms = dict(latency_ms or {})
        self.airgap = airgap
        self.resolver = resolver

    def _airgap_rejection(self, endpoint: EndpointConfig) -> Rejection | None:
        """Why the egress guard would refuse this endpoint in air-gap mode (None: it would not)."""
        if not self.airgap or endpoint.kind != "openai" or not endpoint.base_url:
            return None  # embedded endpoints run in-process
        try:
            EgressGuard([endpoint], airgap=True, resolver=self.resolver).check(endpoint.base_url)
        except EgressDenied as exc:
            return Rejection(endpoint.name, str(exc), (AIRGAP_RULE,), (AIRGAP_ADVICE,))
        return None

    def region_of(self, endpoint: EndpointConfig) -> str:
        """Where an endpoint processes data: `local` on-prem means the workspace region."""
        if endpoint.jurisdiction in ("local", "") and endpoint.hosting == "on_prem":
            return self.home_region
        return endpoint.jurisdiction

    def _strictest(self, chunks: Sequence[Chunk]) -> str:
        labels = [c.classification for c in chunks]
        if any(label not in self.scale.labels for label in labels):
            return UNKNOWN_LABEL  # unknown → deny: no endpoint is cleared for it
        return self.scale.strictest(labels)

    def _categories(self, chunks: Sequence[Chunk]) -> set[str]:
        found: set[str] = set()
        for pattern, category in self.categories.items():
            for c in chunks:
                if fnmatch.fnmatchcase(c.document_id, pattern) or c.source == pattern:
                    found.add(category)
                    break
        return found

    def _order(self, endpoints: list[EndpointConfig]) -> list[EndpointConfig]:
        position = {e.name: i for i, e in enumerate(self.endpoints)}
        if self.preference == "on_prem_first":
            return sorted(
                endpoints,
                key=lambda e: (_HOSTING_ORDER[e.hosting], e.cost_per_1k_tokens, position[e.name]),
            )
        if self.preference == "cheapest":
            return sorted(
                endpoints,
                key=lambda e: (e.cost_per_1k_tokens, _HOSTING_ORDER[e.hosting], position[e.name]),
            )
        if self.preference == "fastest":
            return sorted(
                endpoints,
                key=lambda e: (self.latency_ms.get(e.name, float("inf")), position[e.name]),
            )
        return sorted(endpoints, key=lambda e: position[e.name])

    def decide(
        self,
        principal: Principal,
        chunks: Sequence[Chunk],
        *,
        requested: str | None = None,
        question: str = "",
    ) -> Decision:
        classification = self._strictest(chunks)
        residencies = tuple(sorted({c.residency for c in chunks}))
        categories = self._categories(chunks)
        contains_pii = bool(
            self.pii_scan is not None and self.pii_scan([question, *(c.text for c in chunks)])
        )
        base = {
            "classification": classification,
            "residencies": residencies,
            "contains_pii": contains_pii,
            "categories": tuple(sorted(categories)),
        }
        candidates = list(self.endpoints)
        if requested is not None:
            candidates = [e for e in self.endpoints if e.name == requested]
            if not candidates:
                known = ", ".join(e.name for e in self.endpoints) or "none"
                return Decision(
                    chosen=None,
                    rejected=(Rejection(requested, "not a registered endpoint"),),
                    redact=False,
                    refusal=f"endpoint {requested!r} is not registered (known: {known})",
                    policy_ids=("unknown-endpoint",),
                    policy_version=self.engine.version,
                    **base,  # type: ignore[arg-type]
                )
        if not candidates:
            return Decision(
                chosen=None,
                rejected=(),
                redact=False,
                refusal="no model endpoint is registered; add one with `sovra endpoint add`",
                policy_ids=("no-endpoint",),
                policy_version=self.engine.version,
                **base,  # type: ignore[arg-type]
            )
        user = user_entity(principal)
        requests = []
        sources = {c.source for c in chunks}
        blocked = {e.name: r for e in candidates if (r := self._airgap_rejection(e)) is not None}
        asked = [e for e in candidates if e.name not in blocked]
        for ep in asked:
            context = send_context(
                self.scale,
                classification,
                residencies,
                self.region_of(ep),
                contains_pii=contains_pii,
                categories=categories,
                sources=sources,
            )
            requests.append(
                Request(
                    user,
                    "send_to_endpoint",
                    endpoint_entity(ep, self.scale, self.legal_basis.get(ep.name, "")),
                    context,
                )
            )
        verdicts: dict[str, PolicyDecision] = (
            dict(zip((e.name for e in asked), self.engine.decide_many(requests), strict=True))
            if asked
            else {}
        )
        allowed = [e for e in asked if verdicts[e.name].allowed]
        rejected = tuple(
            blocked[e.name]
            if e.name in blocked
            else Rejection(
                e.name,
                _reason(verdicts[e.name]),
                verdicts[e.name].policy_ids,
                verdicts[e.name].advice,
            )
            for e in candidates
            if e.name in blocked or not verdicts[e.name].allowed
        )
        considered = tuple(e.name for e in self._order(candidates))
        if allowed:
            chosen = self._order(allowed)[0]
            return Decision(
                chosen=chosen,
                rejected=rejected,
                redact=chosen.pii == "redact" and contains_pii,
                refusal=None,
                policy_ids=verdicts[chosen.name].policy_ids,
                policy_version=self.engine.version,
                considered=considered,
                **base,  # type: ignore[arg-type]
            )
        ids = tuple(sorted({pid for r in rejected for pid in r.policy_ids}))
        return Decision(
            chosen=None,
            rejected=rejected,
            redact=False,
            refusal=self._refusal(classification, residencies, rejected, candidates),
            policy_ids=ids,
            policy_version=self.engine.version,
            considered=considered,
            **base,  # type: ignore[arg-type]
        )

    def _refusal(
        self,
        classification: str,
        residencies: tuple[str, ...],
        rejected: tuple[Rejection, ...],
        candidates: Sequence[EndpointConfig],
    ) -> str:
        what = f"{classification} data"
        if residencies:
            what += f" (residency {', '.join(residencies)})"
        lines = [f"no endpoint may receive {what}:"]
        for r in rejected:
            lines.append(f"  {r.endpoint}: {r.reason}")
        hints: list[str] = []
        ids = {pid for r in rejected for pid in r.policy_ids}
        if "restricted-on-prem-only" in ids and not any(e.hosting == "on_prem" for e in candidates):
            hints.append(
                f"an on-prem endpoint is needed for {classification} data; none is registered"
            )
        if "confidential-not-foreign" in ids and all(
            e.hosting == "foreign_cloud" for e in candidates
        ):
            hints.append(
                f"an on-prem or regional-cloud endpoint is needed for {classification} data;"
                " none is registered"
            )
        for r in rejected:
            hints.extend(a for a in r.advice if a not in hints)
        if hints:
            lines.append("to allow it: " + "; ".join(hints))
        return "\n".join(lines)


def _reason(verdict: PolicyDecision) -> str:
    if verdict.errors:
        return "policy error (denied): " + "; ".join(verdict.errors)
    return "denied by " + ", ".join(verdict.policy_ids)
