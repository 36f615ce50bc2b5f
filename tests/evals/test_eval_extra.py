"""The evaluation harness's extra dependencies are an extra: without them a command says which
extra to install instead of failing with a traceback."""

from __future__ import annotations

import sys

import pytest

from sovra.errors import Unavailable
from sovra.evals.pii_eval import generate


def test_pii_set_without_faker_names_the_eval_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faker", None)  # as if the eval extra were not installed
    with pytest.raises(Unavailable, match=r"sovra\[eval\]"):
        generate(per_locale=10)


def test_pii_set_with_faker_is_generated() -> None:
    samples = generate(per_locale=10, seed=1)
    assert len(samples) == 70
