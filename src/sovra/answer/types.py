"""What an answer is: text, citations into permitted chunks, provenance and transparency flags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NOT_FOUND = "I found nothing about this in the documents you can access."


@dataclass(frozen=True)
class Citation:
    number: int
    chunk_id: str
    document_id: str
    source: str
    title: str
    uri: str
    heading_path: tuple[str, ...]
    start: int
    end: int
    quote: str = ""


@dataclass
class Answer:
    question: str
    text: str
    found: bool
    citations: list[Citation] = field(default_factory=list)
    generation: str = "extractive"  # extractive | generative
    endpoint: str = "extractive"
    model: str = ""
    jurisdiction: str = "local"
    hosting: str = "on_prem"
    ai_generated: bool = True  # EU AI Act Art. 50: every machine-composed answer is labelled
    flagged: bool = False
    flags: list[str] = field(default_factory=list)
    language: str = "und"
    took_ms: float = 0.0
    evidence: float = 0.0
    """A found extractive answer: the score of its best quoted sentence (what the found/not-found
    threshold `[answer] min_score` is compared with); 0 when not found and for generated text."""
    tokens_in: int = 0
    tokens_out: int = 0
    receipt: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["citations"] = [
            {**asdict(c), "heading_path": list(c.heading_path)} for c in self.citations
        ]
        return data
