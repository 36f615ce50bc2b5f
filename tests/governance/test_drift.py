"""Drift detection on synthetic query embeddings with fixed seeds.

The synthetic "queries" are unit vectors around six topic centres in 32 dimensions (noise
0.35), standing in for sentence embeddings. Same distribution: both windows draw the six
topics equally. Shifted: the current window draws two topics nine times out of ten.
Reference 200 queries, current 100, PSI threshold 0.25, p-value threshold 0.01 — the
`[govern]` defaults.
"""

from __future__ import annotations

import numpy as np
import pytest

from sovra.config import GovernConfig
from sovra.governance.drift import detect_drift

DIM, TOPICS = 32, 6
DEFAULTS = GovernConfig()


def centres() -> np.ndarray:
    c = np.random.default_rng(7).standard_normal((TOPICS, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def draw(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    topic = rng.choice(TOPICS, size=n, p=weights)
    x = centres()[topic] + 0.35 * rng.standard_normal((n, DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


EVEN = np.full(TOPICS, 1 / TOPICS)
SHIFTED = np.array([0.025, 0.025, 0.025, 0.025, 0.45, 0.45])


def fires(reference: np.ndarray, current: np.ndarray, seed: int, permutations: int) -> bool:
    r = detect_drift(
        reference,
        current,
        clusters=DEFAULTS.drift_clusters,
        permutations=permutations,
        seed=seed,
    )
    return r.psi > DEFAULTS.drift_psi or r.p_value < DEFAULTS.drift_p_value


def test_a_shifted_query_set_raises_drift() -> None:
    for seed in range(5):
        rng = np.random.default_rng(1000 + seed)
        r = detect_drift(draw(rng, 200, EVEN), draw(rng, 100, SHIFTED), permutations=100, seed=seed)
        assert r.psi > DEFAULTS.drift_psi, r
        assert r.p_value < DEFAULTS.drift_p_value, r
        assert r.auc > 0.65


@pytest.mark.slow  # 50 × (KMeans + 100 permutations × 3 folds): minutes on a busy 2-core box
def test_same_distribution_stays_quiet_false_positive_rate() -> None:
    """50 seeded same-distribution trials with the `[govern]` defaults. Measured: 2 of 50
    fire (4 %: seed 18 by the classifier test at p = 0.0099, seed 47 by the PSI); asserted:
    at most 3 of 50, so a library update that shifts one borderline trial does not fail it."""
    fired = [
        seed
        for seed in range(50)
        if fires(
            draw(np.random.default_rng(seed), 200, EVEN),
            draw(np.random.default_rng(10_000 + seed), 100, EVEN),
            seed,
            permutations=100,
        )
    ]
    print(f"same-distribution trials that fired: {len(fired)}/50 (seeds {fired})")
    assert len(fired) <= 3, f"false alerts on seeds {fired}"


def test_one_seed_gives_one_answer() -> None:
    rng = np.random.default_rng(5)
    ref, cur = draw(rng, 120, EVEN), draw(rng, 60, SHIFTED)
    assert detect_drift(ref, cur, permutations=50, seed=3) == detect_drift(
        ref, cur, permutations=50, seed=3
    )
