"""Building the sovereignty components from a Config, for the wiring module (`sovra.workspace`).

detector = detector_for(config)                   # [routing] ner_models, one per process
router = router_for(config, detector=detector)    # policies from <home>/policies
decision = router.decide(principal, chunks, requested=name, question=q)
texts, mapping = protect(decision, [q, *chunk_texts], Redactor(detector))   # pseudonyms if needed
... generate through the chosen endpoint (egress client) ...
answer = redactor.restore(answer, mapping) if mapping else answer

The router's PII scan and the redactor are handed the same detector, so what makes the router
demand redaction is exactly what gets pseudonymised. No module state: the detector travels
with the router and the choice it makes.
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


@lru_cache(maxsize=2)
def _detector(ner_models: tuple[Path, ...]) -> PiiDetector:
    return PiiDetector(ner_models=ner_models)


def detector_for(config: Config) -> PiiDetector:
    """The PII detector with `[routing] ner_models` of this configuration; one per set of
    pipelines per process (building Presidio's analyzer costs about a second)."""
    return _detector(tuple(config.resolve(p) for p in config.routing.ner_models))


def router_for(
    config: Config,
    home: Path | None = None,
    *,
    preference: Preference = "on_prem_first",
    categories: Mapping[str, str] | None = None,
    scan_pii: bool = True,
    legal_basis: Mapping[str, str] | None = None,
    detector: PiiDetector | None = None,
) -> Router:
    """The router for this configuration; its PII scan uses `detector` (default: the
    configuration's, from `detector_for`)."""
    engine = PolicyEngine.for_home(home if home is not None else config.home)
    if scan_pii and detector is None:
        detector = detector_for(config)
    elif not scan_pii:
        detector = None
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
    decision: Decision, texts: Sequence[str], redactor: Redactor
) -> tuple[list[str], Pseudonyms | None]:
    """The texts to send to the chosen endpoint: pseudonymised when the decision says so."""
    if decision.chosen is None:
        raise ValueError("no endpoint was chosen; nothing may be sent")
    if not decision.redact:
        return list(texts), None
    sent, mapping = redactor.pseudonymise(texts)
    return sent, mapping


def protect_texts(texts: Sequence[str], detector: PiiDetector) -> tuple[list[str], Pseudonyms]:
    """Pseudonymise texts that will be sent together (one mapping, consistent placeholders)."""
    return Redactor(detector).pseudonymise(texts)
