"""Which way to answer, decided in one place: the sovereignty router.

`[answer] endpoint = ""` answers extractively and never consults a model. Otherwise (a named
endpoint, or `"auto"` to let the router pick) the Cedar-backed router decides from the asker,
the retrieved chunks' strictest classification, residency, data categories and PII, and the
registered endpoints: it names the endpoint and whether text must be pseudonymised first, or
refuses with the rule that blocked it. Every decision, allow or refuse, is handed to
`on_decision` (the workspace appends it to the audit log). A refusal falls back to extractive
answers, which never leave the process. A base model that cannot follow instructions is only
used when the asker named it explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sovra.answer.service import EXTRACTIVE, ChooseGeneration, EndpointInfo, GenerationChoice
from sovra.config import Config, EndpointConfig
from sovra.domain import Principal
from sovra.models.generation import Generator
from sovra.search.hybrid import SearchHit

AUTO = "auto"
OnDecision = Callable[[Principal, object, Sequence[SearchHit]], None]


def _load(endpoint: EndpointConfig, home: Path, *, airgap: bool) -> Generator:
    from sovra.models.loading import generator_for  # the model registry lives there

    # The guard allows this endpoint's destination alone, and in air-gap mode re-checks at send
    # time that it is local — the router's decision is not the only line of defence.
    return generator_for(endpoint, home, airgap=airgap)


def config_choice(
    config: Config, home: Path, on_decision: OnDecision | None = None
) -> ChooseGeneration:
    cache: dict[str, Generator] = {}
    router = None

    def choose(
        question: str,
        principal: Principal | None,
        hits: Sequence[SearchHit],
        requested: str | None,
        extractive: bool,
    ) -> GenerationChoice:
        nonlocal router
        name = requested if requested is not None else config.answer.endpoint
        if extractive or not name or not hits:
            return GenerationChoice(EXTRACTIVE, None)
        if name != AUTO:
            config.endpoint(name)  # unknown endpoint → clear ConfigError
        if principal is None:
            return GenerationChoice(EXTRACTIVE, None, "endpoint_refused:no principal")
        if router is None:
            from sovra.policy.wiring import router_for

            router = router_for(
                config,
                home,
                preference=config.routing.preference,
                categories=config.routing.categories,
                scan_pii=config.routing.pii_scan,
                legal_basis={e.name: e.legal_basis for e in config.endpoints if e.legal_basis},
            )
        decision = router.decide(
            principal,
            [h.chunk for h in hits],
            requested=None if name == AUTO else name,
            question=question,
        )
        if on_decision is not None:
            on_decision(principal, decision, hits)
        ep = decision.chosen
        if ep is None:
            return GenerationChoice(
                EXTRACTIVE,
                None,
                f"endpoint_refused:{decision.refusal}",
                decision=decision.to_json(),
            )
        if ep.name not in cache:
            cache[ep.name] = _load(ep, home, airgap=config.egress.airgap)
        gen = cache[ep.name]
        if not gen.instruction_tuned and requested is None:
            return GenerationChoice(
                EXTRACTIVE,
                None,
                f"base_model:{gen.model_id} is not instruction-tuned",
                decision=decision.to_json(),
            )
        return GenerationChoice(
            EndpointInfo(ep.name, ep.jurisdiction, ep.hosting),
            gen,
            redact=decision.redact,
            decision=decision.to_json(),
            endpoint_config=ep,
        )

    return choose
