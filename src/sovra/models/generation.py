"""The Generator protocol: stream text for chat messages, report model, tokens and timing.

Also what every backend shares (`stream_generation`): the stream loop, the first-token clock,
the stop-sequence filter and the totals; a backend supplies only its raw text deltas.
"""

from __future__ import annotations

import time
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


class StopFilter:
    """Holds back text that may be the start of a stop sequence; cuts at the first full match.

    llama.cpp's own stop handling re-decodes the whole output on every token (quadratic), and
    some servers ignore `stop` or accept only four; this keeps only the undecided tail.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class StreamedGeneration:
    """One streamed answer; iterate once. `stats` is complete when iteration ends."""

    def __init__(self, pieces: Iterator[str], stats: GenerationStats) -> None:
        self._pieces = pieces
        self.stats = stats

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        """Stop early: the backend stops generating (the model is freed for the next caller,
        the HTTP response closed); also done when garbage-collected."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


def timed_pieces(
    deltas: Iterator[str], stats: GenerationStats, stop: Sequence[str] = ()
) -> Iterator[str]:
    """The text of a backend's raw `deltas`, cut at the first stop sequence (`finish_reason`
    "stop" then), timing the first piece and the whole stream into `stats`.

    The source keeps the backend's part of `stats` (tokens, its own finish reason) and raises
    GenerationError for the backend's failures. Lazy: the clock starts when the caller starts
    reading, like a network request. The source is closed when the stream ends, early or not,
    which stops the backend (no more decoding; the HTTP response closed so the server stops).
    """
    started = time.perf_counter()
    stops = StopFilter(stop)

    def emit(text: str) -> str:
        if stats.first_token_s is None:
            stats.first_token_s = time.perf_counter() - started
        return text

    try:
        try:
            for delta in deltas:
                text = stops.feed(delta)
                if text:
                    yield emit(text)
                if stops.stopped:
                    stats.finish_reason = "stop"
                    return
            tail = stops.flush()
            if tail:
                yield emit(tail)
        finally:
            close = getattr(deltas, "close", None)
            if close is not None:
                close()
    finally:
        stats.total_s = time.perf_counter() - started


def stream_generation(
    deltas: Iterator[str], stats: GenerationStats, stop: Sequence[str] = ()
) -> StreamedGeneration:
    """A Generation over a backend's raw text deltas; see `timed_pieces`."""
    return StreamedGeneration(timed_pieces(deltas, stats, stop), stats)
