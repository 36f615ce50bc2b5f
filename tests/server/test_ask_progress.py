"""A cancelled question stops being composed: the SSE frames' generator is closed as soon as
the client has gone, not when it is garbage-collected."""

from __future__ import annotations

import asyncio
from collections.abc import Generator

from sovra.server.api import until_disconnected


def test_generator_closed_when_the_client_goes() -> None:
    produced: list[int] = []
    closed: list[bool] = []

    def frames() -> Generator[str, None, None]:
        try:
            for i in range(1000):
                produced.append(i)
                yield f"data: {i}\n\n"
        finally:
            closed.append(True)

    checks = 0

    async def disconnected() -> bool:
        nonlocal checks
        checks += 1
        return checks > 2

    async def consume() -> list[str]:
        return [f async for f in until_disconnected(frames(), disconnected)]

    got = asyncio.run(consume())
    assert got == ["data: 0\n\n", "data: 1\n\n"]
    assert closed == [True] and len(produced) == 3


def test_whole_stream_when_the_client_stays() -> None:
    async def never() -> bool:
        return False

    def frames() -> Generator[str, None, None]:
        yield from ("a", "b")

    async def consume() -> list[str]:
        return [f async for f in until_disconnected(frames(), never)]

    assert asyncio.run(consume()) == ["a", "b"]
