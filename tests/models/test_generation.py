"""The stream loop every backend shares: stop sequences, source closing, timing and stats."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sovra.models.generation import (
    GenerationError,
    GenerationStats,
    StreamedGeneration,
    stream_generation,
)


class Source:
    """Raw deltas as a backend yields them; records whether the backend was told to stop."""

    def __init__(self, deltas: list[str], fail_after: int | None = None) -> None:
        self.deltas = deltas
        self.fail_after = fail_after
        self.sent = 0
        self.closed = False

    def __call__(self, stats: GenerationStats) -> Iterator[str]:
        try:
            for delta in self.deltas:
                if self.fail_after is not None and self.sent >= self.fail_after:
                    raise GenerationError("backend died")
                self.sent += 1
                stats.tokens_out += 1
                yield delta
            stats.finish_reason = "length"
        finally:
            self.closed = True


def _generation(source: Source, stop: list[str]) -> StreamedGeneration:
    stats = GenerationStats("test")
    return stream_generation(source(stats), stats, stop)


def test_stop_sequence_split_across_deltas_ends_the_stream_and_the_backend() -> None:
    source = Source(["The answer", " is 4", "2.</", "sour", "ce> and more", " never read"])
    gen = _generation(source, ["</source>"])
    pieces = list(gen)
    assert "".join(pieces) == "The answer is 42."
    assert gen.stats.finish_reason == "stop"
    assert source.closed and source.sent == 5  # nothing decoded past the stop
    assert gen.stats.tokens_out == 5
    assert gen.stats.first_token_s is not None
    assert gen.stats.total_s >= gen.stats.first_token_s


def test_a_held_back_prefix_that_is_no_stop_is_sent_at_the_end() -> None:
    source = Source(["Look at <", "/so"])
    gen = _generation(source, ["</source>"])
    assert list(gen) == ["Look at ", "</so"]
    assert gen.stats.finish_reason == "length"  # the backend's own reason stands


def test_nothing_is_read_before_iteration_and_timing_starts_then() -> None:
    source = Source(["a", "b"])
    gen = _generation(source, [])
    assert source.sent == 0 and gen.stats.first_token_s is None
    assert list(gen) == ["a", "b"]
    assert gen.stats.finish_reason == "length"


def test_closing_early_closes_the_backend() -> None:
    source = Source(["one ", "two ", "three"])
    gen = _generation(source, [])
    assert next(iter(gen)) == "one "
    gen.close()
    assert source.closed and source.sent == 1
    assert gen.stats.total_s > 0


def test_backend_errors_pass_through_with_the_time_recorded() -> None:
    source = Source(["one ", "two"], fail_after=1)
    gen = _generation(source, [])
    pieces: list[str] = []
    with pytest.raises(GenerationError, match="backend died"):
        for piece in gen:
            pieces.append(piece)
    assert pieces == ["one "]
    assert gen.stats.total_s > 0
