"""The server runs numpy's BLAS on one thread unless the operator set OPENBLAS_NUM_THREADS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, numpy
from threadpoolctl import threadpool_info
from sovra.server.slots import one_blas_thread
applied = one_blas_thread()
print(json.dumps({"applied": applied,
                  "threads": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]}))
"""


def _probe(env_value: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    # A fresh interpreter: the limit is process-wide and numpy reads the variable at import.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_blas_is_capped_at_one_thread_when_the_operator_set_nothing() -> None:
    for unset in (None, ""):  # an empty value is unset, as OpenBLAS reads it
        got = _probe(unset)
        assert got["applied"] is True
        assert got["threads"] == [1]


def test_an_operators_openblas_setting_wins() -> None:
    got = _probe("2")
    assert got["applied"] is False
    assert got["threads"] == [2]
