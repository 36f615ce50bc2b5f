"""PII detection for the router and the redactor: Presidio's analyzer with sovra's recognizers.

Identifiers are found by pattern and then *validated* (sovra.policy.checksums), so an order
number that looks like a BSN is not flagged: IBAN, EU VAT, German Steuer-ID, French NIR,
Spanish DNI/NIE, Italian codice fiscale, Dutch BSN, Polish PESEL, UK NINO, plus phone numbers
(libphonenumber, EU regions), e-mail and IP addresses.

Names and places are *not* detected by default: that needs a spaCy NER pipeline, and sovra
ships none (see docs/sovereignty.md for what was checked). The analyzer runs with a no-op NLP
engine: nothing is loaded or downloaded. An operator who has a checked pipeline passes its
unpacked directory, `PiiDetector(ner_models=[path])`: it is loaded from disk only, its spaCy
version range is checked against the installed spaCy, and its PER/PERSON and LOC/GPE entities
become PERSON and LOCATION findings.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import (
    ContextAwareEnhancer,
)
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.predefined_recognizers import (
    PhoneRecognizer,
)

from sovra.errors import Invalid
from sovra.policy import checksums

LANGUAGE = "xx"
"""Presidio language code our recognizers register under: they work on any language."""

PHONE_REGIONS = ("DE", "FR", "ES", "IT", "NL", "PL", "GB", "AT", "BE", "CH", "IE", "PT", "LU")

ENTITIES: tuple[str, ...] = (
    "IBAN_CODE",
    "EU_VAT",
    "DE_STEUER_ID",
    "FR_NIR",
    "ES_DNI",
    "ES_NIE",
    "IT_FISCAL_CODE",
    "NL_BSN",
    "PL_PESEL",
    "UK_NINO",
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "IP_ADDRESS",
)
CHECKSUM_ENTITIES: frozenset[str] = frozenset(
    {"IBAN_CODE", "EU_VAT", "DE_STEUER_ID", "FR_NIR", "ES_DNI", "ES_NIE", "IT_FISCAL_CODE",
     "NL_BSN", "PL_PESEL"}
)  # fmt: skip


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int
    score: float
    text: str


def _ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b"
)

# (entity, pattern, validator, score). Boundaries use lookarounds instead of \b so that
# identifiers glued to punctuation ("BSN:123456782,") are still found.
_L = r"(?<![A-Za-z0-9])"
_R = r"(?![A-Za-z0-9])"
_RULES: tuple[tuple[str, str, Callable[[str], bool], float], ...] = (
    ("IBAN_CODE", _L + r"[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}", checksums.iban, 1.0),
    (
        "EU_VAT",
        _L
        + r"(?:ATU\d{8}|BE[01]?\d{9}|DE\d{9}|ES[A-Z0-9]\d{7}[A-Z0-9]|FR[0-9]{2} ?\d{3} ?\d{3} ?\d{3}"
        r"|GB\d{3} ?\d{4} ?\d{2}|IT\d{11}|NL\d{9}B\d{2}|PL\d{10})" + _R,
        checksums.eu_vat,
        1.0,
    ),
    ("DE_STEUER_ID", _L + r"[1-9]\d(?: ?\d{3}){3}" + _R, checksums.de_steuer_id, 1.0),
    (
        "FR_NIR",
        _L + r"[1-478] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}" + _R,
        checksums.fr_nir,
        1.0,
    ),
    ("ES_DNI", _L + r"\d{8}-?[A-Z]" + _R, checksums.es_dni, 1.0),
    ("ES_NIE", _L + r"[XYZ]-?\d{7}-?[A-Z]" + _R, checksums.es_nie, 1.0),
    (
        "IT_FISCAL_CODE",
        _L
        + r"[A-Za-z]{6}[0-9LMNPQRSTUV]{2}[A-Za-z][0-9LMNPQRSTUV]{2}[A-Za-z][0-9LMNPQRSTUV]{3}[A-Za-z]"
        + _R,
        checksums.it_codice_fiscale,
        1.0,
    ),
    ("NL_BSN", _L + r"(?:\d{4}\.\d{2}\.\d{3}|\d{9})" + _R, checksums.nl_bsn, 1.0),
    ("PL_PESEL", _L + r"\d{11}" + _R, checksums.pl_pesel, 1.0),
    (
        "UK_NINO",
        _L + r"[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]" + _R,
        checksums.uk_nino,
        0.85,
    ),
    (
        "IP_ADDRESS",
        _L
        + r"(?:\d{1,3}\.){3}\d{1,3}"
        + _R
        + r"|(?<![\w:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{1,4}"
        + _R,
        _ip,
        0.9,
    ),
)


_DATE = re.compile(r"\d{1,2}[./-]\d{1,2}[./-](?:\d{2}|\d{4})|\d{4}[./-]\d{1,2}[./-]\d{1,2}")


def _trim_iban(text: str, start: int, end: int) -> int | None:
    """An IBAN's length is fixed per country: stop the match there (the greedy pattern may
    have run on into a following word such as `BIC`)."""
    want = checksums.IBAN_LENGTHS.get(text[start : start + 2])
    if want is None:
        return None
    count = 0
    for i in range(start, end):
        if text[i] != " ":
            count += 1
            if count == want:
                return i + 1
    return None


class ValidatedPatternRecognizer(EntityRecognizer):
    """One entity: candidates by regular expression, kept only when the validator agrees."""

    def __init__(
        self, entity: str, pattern: str, validator: Callable[[str], bool], score: float
    ) -> None:
        self.regex = re.compile(pattern)
        self.validator = validator
        self.score = score
        super().__init__(
            supported_entities=[entity],
            name=f"sovra-{entity.lower()}",
            supported_language=LANGUAGE,
        )

    def load(self) -> None:  # nothing to load: patterns compile in __init__
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: Any = None
    ) -> list[RecognizerResult]:
        entity = self.supported_entities[0]
        out: list[RecognizerResult] = []
        for match in self.regex.finditer(text):
            start, end = match.span()
            if entity == "IBAN_CODE":
                trimmed = _trim_iban(text, start, end)
                if trimmed is None:
                    continue
                end = trimmed
                if end < len(text) and text[end].isalnum():
                    continue  # longer than the country's IBAN: not one
            if self.validator(text[start:end]):
                out.append(RecognizerResult(entity, start, end, self.score))
        return out


class SovraEmailRecognizer(ValidatedPatternRecognizer):
    """Presidio's own e-mail recognizer validates domains with tldextract, which downloads the
    public-suffix list at run time; this one accepts any syntactically valid domain.

    Class names here must differ from Presidio's: its registry loader finds predefined
    recognizers by class name among all subclasses, so a second `EmailRecognizer` would be
    picked up by an unrelated default-configured analyzer in the same process."""

    def __init__(self) -> None:
        super().__init__("EMAIL_ADDRESS", _EMAIL.pattern, lambda _v: True, 0.95)


class ValidPhoneRecognizer(PhoneRecognizer):
    """libphonenumber over the EU regions, keeping only numbers valid for their region.

    Presidio scores phone matches 0.4 and relies on context words to lift them; without an NLP
    pipeline there are no context words, so validity (leniency VALID) has to carry the score.
    A same-length checksum identifier (a 9-digit BSN) still wins the overlap (score 1.0).
    """

    SCORE = 0.75

    def __init__(self) -> None:
        super().__init__(
            supported_language=LANGUAGE,
            supported_regions=PHONE_REGIONS,
            context=[],
            leniency=phonenumbers.Leniency.VALID,
        )

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: Any = None
    ) -> list[RecognizerResult]:
        kept = []
        for r in super().analyze(text, entities, nlp_artifacts):
            raw = text[r.start : r.end]
            digits = sum(ch.isdigit() for ch in raw)
            international = raw.startswith(("+", "00"))
            grouped = any(ch in raw for ch in " -/().")
            # bare digit runs are ids and order numbers far more often than phone numbers
            if digits < 7 or not (international or raw.startswith("0") or grouped):
                continue
            if not (international or grouped) and digits < 10:
                continue  # an ungrouped national number has 10+ digits in these regions
            # part of a longer token (INC-2024-00042, PO1234567) or a date (24.08.2003)
            before = text[r.start - 1] if r.start else " "
            after = text[r.end] if r.end < len(text) else " "
            if before.isalnum() or before in "-/#" or after.isalnum() or after in "-/":
                continue
            if _DATE.fullmatch(raw.strip("() ")):
                continue
            r.score = self.SCORE
            kept.append(r)
        return kept


class _NoNlpEngine(NlpEngine):
    """Presidio needs an NLP engine; ours returns no tokens and no entities (see module doc)."""

    def load(self) -> None:
        return None

    def is_loaded(self) -> bool:
        return True

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        return NlpArtifacts(
            entities=[],
            tokens=[],  # type: ignore[arg-type]  # no spaCy Doc: no tokens, by design
            tokens_indices=[],
            lemmas=[],
            nlp_engine=self,
            language=language,
        )

    def process_batch(
        self,
        texts: Iterable[str],
        language: str,
        batch_size: int = 1,
        n_process: int = 1,
        **kwargs: Any,
    ) -> Iterator[tuple[str, NlpArtifacts]]:
        for text in texts:
            yield text, self.process_text(text, language)

    def is_stopword(self, word: str, language: str) -> bool:
        return False

    def is_punct(self, word: str, language: str) -> bool:
        return False

    def get_supported_entities(self) -> list[str]:
        return []

    def get_supported_languages(self) -> list[str]:
        return [LANGUAGE]


class _NoContext(ContextAwareEnhancer):
    """Checksums, not context words, decide; without tokens there is no context to use."""

    def __init__(self) -> None:
        super().__init__(
            context_similarity_factor=0,
            min_score_with_context_similarity=0,
            context_prefix_count=0,
            context_suffix_count=0,
        )

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[Any],
        nlp_artifacts: Any,
        recognizers: Any,
        context: Any = None,
    ) -> list[Any]:
        return raw_results


NER_LABELS: dict[str, str] = {
    "PER": "PERSON",
    "PERSON": "PERSON",
    "LOC": "LOCATION",
    "GPE": "LOCATION",
}
"""spaCy NER labels (WikiNER-style and OntoNotes-style models) → sovra entity names."""


class NerModelError(Invalid, ValueError):
    """An operator-supplied spaCy model directory cannot be used; the message says why."""


def load_ner_model(path: str | Path) -> Any:
    """A spaCy pipeline from an unpacked model directory: local files only, version-checked."""
    from importlib.metadata import version

    import spacy
    from spacy.util import is_compatible_version

    folder = Path(path).expanduser()
    meta_file = folder / "meta.json"
    if not (folder / "config.cfg").is_file() or not meta_file.is_file():
        raise NerModelError(
            f"spaCy model directory {folder}: no config.cfg and meta.json there; point to the"
            " unpacked pipeline folder (e.g. .../fr_core_news_sm/fr_core_news_sm-3.8.0)"
        )
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    wanted = str(meta.get("spacy_version", ""))
    installed = version("spacy")
    if wanted and is_compatible_version(installed, wanted) is False:
        raise NerModelError(
            f"spaCy model {folder} needs spaCy {wanted}, this install has {installed};"
            " use the model release built for this spaCy version"
        )
    nlp = spacy.load(folder)
    if "ner" not in nlp.pipe_names:
        raise NerModelError(f"spaCy model {folder} has no 'ner' component: it cannot find names")
    return nlp


class SpacyNerRecognizer(EntityRecognizer):
    """Names and places from operator-supplied spaCy pipelines (each runs over every text)."""

    def __init__(self, pipelines: Sequence[Any], score: float = 0.85) -> None:
        self.pipelines = list(pipelines)
        self.score = score
        super().__init__(
            supported_entities=sorted(set(NER_LABELS.values())),
            supported_language=LANGUAGE,
            name="SpacyNerRecognizer",
        )

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        results = []
        for nlp in self.pipelines:
            for ent in nlp(text).ents:
                entity = NER_LABELS.get(ent.label_)
                if entity is not None and (not entities or entity in entities):
                    results.append(
                        RecognizerResult(entity, ent.start_char, ent.end_char, self.score)
                    )
        return results


def sovra_recognizers() -> list[EntityRecognizer]:
    recognizers: list[EntityRecognizer] = [
        ValidatedPatternRecognizer(entity, pattern, validator, score)
        for entity, pattern, validator, score in _RULES
    ]
    recognizers.append(SovraEmailRecognizer())
    recognizers.append(ValidPhoneRecognizer())
    return recognizers


class PiiDetector:
    """Finds personal data in text. Thread-safe after construction (Presidio's analyzer is)."""

    def __init__(
        self,
        threshold: float = 0.5,
        nlp_engine: Any = None,
        ner_models: Sequence[str | Path] = (),
    ) -> None:
        registry = RecognizerRegistry(supported_languages=[LANGUAGE])
        for recognizer in sovra_recognizers():
            registry.add_recognizer(recognizer)
        if ner_models:
            registry.add_recognizer(SpacyNerRecognizer([load_ner_model(p) for p in ner_models]))
        self.threshold = threshold
        self.analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp_engine or _NoNlpEngine(),
            supported_languages=[LANGUAGE],
            default_score_threshold=threshold,
            context_aware_enhancer=_NoContext(),
        )

    def find(self, text: str, entities: Sequence[str] | None = None) -> list[Finding]:
        results = self.analyzer.analyze(
            text=text, language=LANGUAGE, entities=list(entities) if entities else None
        )
        findings = [
            Finding(r.entity_type, r.start, r.end, float(r.score), text[r.start : r.end])
            for r in results
        ]
        return _resolve_overlaps(findings)

    def contains_pii(self, texts: Sequence[str]) -> bool:
        """The router's `pii_scan`: any personal data in any of the texts?"""
        return any(self.find(t) for t in texts if t)


# When two validated recognizers claim overlapping spans, the more specific wins: a checksum
# beats a format, and a longer span beats a shorter one inside it.
_PRIORITY = {e: i for i, e in enumerate(ENTITIES)}


def _resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    ranked = sorted(
        findings,
        key=lambda f: (-(f.end - f.start), -f.score, _PRIORITY.get(f.entity, 99)),
    )
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)
