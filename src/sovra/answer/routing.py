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

from sovra.answer.service import (
    EXTRACTIVE,
    ChooseGeneration,
    EndpointInfo,
    GenerationChoice,
    Pseudonymise,
)
from sovra.config import Config, EndpointConfig
from sovra.domain import Chunk, Principal
from sovra.models.generation import Generator
from sovra.policy.router import Router
from sovra.search.hybrid import SearchHit

AUTO = "auto"
OnDecision = Callable[[Principal, object, Sequence[SearchHit]], None]


def config_choice(
    config: Config,
    *,
    router: Callable[[], Router],
    load_generator: Callable[[EndpointConfig], Generator],
    pseudonymise: Pseudonymise,
    on_decision: OnDecision | None = None,
    context: Sequence[Chunk] = (),
) -> ChooseGeneration:
    """The chooser for one answer, from the components the wiring module built: `router`
    makes the router (policies are read when an answer needs them, so an edited policy applies
    to the next answer), `load_generator` the endpoint's generator (with its egress guard),
    `pseudonymise` the one PII detector's redaction that the router's scan agrees with.
    `context`: chunks the question carries besides the retrieved ones (a workflow's input
    document); the router weighs their labels too, so the strictest label in the prompt wins."""
    built: Router | None = None

    def choose(
        question: str,
        principal: Principal | None,
        hits: Sequence[SearchHit],
        requested: str | None,
        extractive: bool,
    ) -> GenerationChoice:
        nonlocal built
        name = requested if requested is not None else config.answer.endpoint
        if extractive or not name or not hits:
            return GenerationChoice(EXTRACTIVE, None)
        if name != AUTO:
            config.endpoint(name)  # unknown endpoint → clear ConfigError
        if principal is None:
            return GenerationChoice(EXTRACTIVE, None, "endpoint_refused:no principal")
        if built is None:
            built = router()
        decision = built.decide(
            principal,
            [*context, *(h.chunk for h in hits)],
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
        gen = load_generator(ep)
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
            pseudonymise=pseudonymise if decision.redact else None,
            decision=decision.to_json(),
            endpoint_config=ep,
        )

    return choose
