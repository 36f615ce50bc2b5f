"""The Generator protocol: stream text for chat messages, report model, tokens and timing."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sovra.errors import Invalid, Unavailable
from sovra.models.base import ModelError

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


class GenerationError(Unavailable, ModelError):
    """The endpoint or model failed (down, timeout, malformed reply); the message says which."""


class BadGenerationRequest(GenerationError):
    """The request or the endpoint's configuration is wrong (missing API key, bad base_url,
    prompt too long); retrying does not help, fixing it does."""

    kind = Invalid


@dataclass
class GenerationStats:
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    finish_reason: str = ""

    @property
    def tokens_per_s(self) -> float:
        gen = self.total_s - (self.first_token_s or 0.0)
        return self.tokens_out / gen if gen > 0 and self.tokens_out else 0.0


class Generation(Protocol):
    """Iterate for text pieces as they arrive; `stats` is complete once iteration ends."""

    stats: GenerationStats

    def __iter__(self) -> Iterator[str]: ...


@runtime_checkable
class Generator(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def context_length(self) -> int:
        """Tokens the model accepts, prompt and answer together."""
        ...

    @property
    def instruction_tuned(self) -> bool:
        """False for base models: they continue text instead of following the prompt."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generation: ...
