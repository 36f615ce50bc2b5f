"""Which way to answer, decided in one place (until the sovereignty router replaces it).

The decision comes from `sovra.toml` (`[answer] endpoint`, `[[endpoints]]`), with two safety
rules that never bend: data above an endpoint's highest allowed classification is not sent to
it (unknown labels count as the strictest), and a base model that cannot follow instructions
is only used when asked for explicitly. In both cases the answer falls back to extractive and
says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sovra.answer.service import EXTRACTIVE, ChooseGeneration, EndpointInfo, GenerationChoice
from sovra.config import Config, EndpointConfig
from sovra.models.generation import Generator
from sovra.search.hybrid import SearchHit


def _load(endpoint: EndpointConfig, home: Path) -> Generator:
    from sovra.models.loading import generator_for  # the model registry lives there

    return generator_for(endpoint, home)


def config_choice(config: Config, home: Path) -> ChooseGeneration:
    scale = config.scale
    cache: dict[str, Generator] = {}

    def choose(
        question: str, hits: Sequence[SearchHit], requested: str | None, extractive: bool
    ) -> GenerationChoice:
        name = requested if requested is not None else config.answer.endpoint
        if extractive or not name:
            return GenerationChoice(EXTRACTIVE, None)
        ep = config.endpoint(name)
        ceiling = scale.rank(ep.max_classification)
        for hit in hits:
            label = hit.chunk.classification
            rank = scale.rank(label) if label in scale.labels else len(scale.labels)
            if rank > ceiling:
                return GenerationChoice(
                    EXTRACTIVE,
                    None,
                    f"endpoint_refused:{ep.name} may see up to {ep.max_classification},"
                    f" the sources are {label}",
                )
        if ep.name not in cache:
            cache[ep.name] = _load(ep, home)
        gen = cache[ep.name]
        if not gen.instruction_tuned and requested is None:
            return GenerationChoice(
                EXTRACTIVE, None, f"base_model:{gen.model_id} is not instruction-tuned"
            )
        return GenerationChoice(EndpointInfo(ep.name, ep.jurisdiction, ep.hosting), gen)

    return choose
