"""Building the sovereignty components from a Config, for the one call site in `answer/`.

router = router_for(config)                       # policies from <home>/policies
decision = router.decide(principal, chunks, requested=name, question=q)
texts, mapping = protect(decision, [q, *chunk_texts], redactor)   # pseudonyms if needed
... generate through the chosen endpoint (egress client) ...
answer = redactor.restore(answer, mapping) if mapping else answer
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from sovra.config import Config
from sovra.policy.engine import PolicyEngine
from sovra.policy.pii import PiiDetector
from sovra.policy.redact import Pseudonyms, Redactor
from sovra.policy.router import Decision, Preference, Router

DEMO_CATEGORIES: dict[str, str] = {"handbook:content/departments/people-talent/*": "hr"}
"""The demo company's HR pages (demo/sovra.toml); real installs configure their own."""


_ner_models: tuple[Path, ...] = ()


@lru_cache(maxsize=2)
def _detector(ner_models: tuple[Path, ...]) -> PiiDetector:
    return PiiDetector(ner_models=ner_models)


def shared_detector() -> PiiDetector:
    """One detector per process (building Presidio's analyzer costs about a second), with the
    NER pipelines of the configuration `router_for` last saw — so the router's PII scan and the
    redactor always agree on what counts as PII."""
    return _detector(_ner_models)


def configure_detector(config: Config) -> None:
    """Use `[routing] ner_models` from this configuration in the shared detector."""
    global _ner_models
    _ner_models = tuple(config.resolve(p) for p in config.routing.ner_models)


def router_for(
    config: Config,
    home: Path | None = None,
    *,
    preference: Preference = "on_prem_first",
    categories: Mapping[str, str] | None = None,
    scan_pii: bool = True,
    legal_basis: Mapping[str, str] | None = None,
) -> Router:
    engine = PolicyEngine.for_home(home if home is not None else config.home)
    configure_detector(config)
    detector = shared_detector() if scan_pii else None
    return Router(
        engine,
        config.endpoints,
        config.scale,
        home_region=config.workspace.region,
        preference=preference,
        categories=categories,
        pii_scan=detector.contains_pii if detector is not None else None,
        legal_basis=legal_basis,
        airgap=config.egress.airgap,
    )


def protect(
    decision: Decision, texts: Sequence[str], redactor: Redactor | None = None
) -> tuple[list[str], Pseudonyms | None]:
    """The texts to send to the chosen endpoint: pseudonymised when the decision says so."""
    if decision.chosen is None:
        raise ValueError("no endpoint was chosen; nothing may be sent")
    if not decision.redact:
        return list(texts), None
    redactor = redactor or Redactor(shared_detector())
    sent, mapping = redactor.pseudonymise(texts)
    return sent, mapping


def protect_texts(texts: Sequence[str]) -> tuple[list[str], Pseudonyms]:
    """Pseudonymise texts that will be sent together (one mapping, consistent placeholders)."""
    return Redactor(shared_detector()).pseudonymise(texts)
