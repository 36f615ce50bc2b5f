"""Reversible pseudonymisation for endpoints with `pii = "redact"` (docs/architecture.md, "protect").

Before text leaves for such an endpoint every finding is replaced by a pseudonym such as
`<IBAN_CODE_1>`, the same value getting the same pseudonym across all texts of one request.
The mapping stays in this process (the caller holds it for the request only); `restore` puts
the originals back into the answer shown to the user. Pseudonyms never collide with text
already present in the input, so a document cannot plant `<EMAIL_ADDRESS_1>` to make
`restore` reveal something else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

from sovra.policy.pii import PiiDetector

_TOKEN = re.compile(r"<([A-Z][A-Z_]*)_(\d+)>|\[([A-Z][A-Z_]*)_(\d+)\]|\b([A-Z][A-Z_]*)_(\d+)\b")


@dataclass
class Pseudonyms:
    """The mapping of one request: pseudonym → original, and original → pseudonym."""

    originals: dict[str, str] = field(default_factory=dict)
    by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)

    def pseudonym(self, entity: str, value: str) -> str:
        key = (entity, value)
        if key not in self.by_value:
            n = self.counters.get(entity, 0)
            while True:
                n += 1
                token = f"<{entity}_{n}>"
                if token not in self.taken:
                    break
            self.counters[entity] = n
            self.by_value[key] = token
            self.originals[token] = value
        return self.by_value[key]

    def __len__(self) -> int:
        return len(self.originals)


class Redactor:
    """`pseudonymise(texts) -> (texts, mapping)` and `restore(text, mapping)`."""

    def __init__(self, detector: PiiDetector | None = None) -> None:
        self.detector = detector or PiiDetector()
        self.anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]

    def pseudonymise(
        self, texts: Sequence[str], mapping: Pseudonyms | None = None
    ) -> tuple[list[str], Pseudonyms]:
        mapping = mapping or Pseudonyms()
        for text in texts:
            for m in _TOKEN.finditer(text):  # any spelling restore() would understand
                entity = m.group(1) or m.group(3) or m.group(5)
                number = m.group(2) or m.group(4) or m.group(6)
                mapping.taken.add(f"<{entity}_{number}>")
        out: list[str] = []
        for text in texts:
            findings = self.detector.find(text)
            if not findings:
                out.append(text)
                continue
            results = [RecognizerResult(f.entity, f.start, f.end, f.score) for f in findings]
            operators = {
                entity: OperatorConfig(
                    "custom", {"lambda": lambda value, e=entity: mapping.pseudonym(e, value)}
                )
                for entity in {f.entity for f in findings}
            }
            result = self.anonymizer.anonymize(
                text=text, analyzer_results=results, operators=operators
            )
            out.append(str(result.text))
        return out, mapping

    @staticmethod
    def restore(text: str, mapping: Pseudonyms) -> str:
        """Put originals back; also where a model dropped the angle brackets or used [ ]."""
        if not mapping.originals:
            return text

        def swap(match: re.Match[str]) -> str:
            entity = match.group(1) or match.group(3) or match.group(5)
            number = match.group(2) or match.group(4) or match.group(6)
            return mapping.originals.get(f"<{entity}_{number}>", match.group(0))

        return _TOKEN.sub(swap, text)
