"""Query-distribution drift between a reference and a current window of query embeddings.

Two tests, both on library statistics:

- **PSI on topic clusters**: scikit-learn `KMeans` is fitted on the reference window's
  embeddings; both windows are assigned to its clusters, and the population stability index
  of the two cluster shares is `KL(cur‖ref) + KL(ref‖cur)` (`scipy.stats.entropy`, which
  normalises the counts), each cluster's count smoothed by half a query. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate, > 0.25 large.
- **Classifier two-sample test**: a logistic regression learns to tell the windows apart;
  its cross-validated ROC AUC is ~0.5 when they come from one distribution. The p-value is
  scikit-learn's `permutation_test_score` (labels permuted, the model refitted each time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import entropy

_SMOOTHING = 0.5


@dataclass(frozen=True)
class DriftResult:
    psi: float
    auc: float
    p_value: float
    reference_shares: tuple[float, ...]
    current_shares: tuple[float, ...]
    reference_n: int
    current_n: int


def cluster_psi(
    reference: np.ndarray, current: np.ndarray, *, clusters: int, seed: int = 0
) -> tuple[float, np.ndarray, np.ndarray]:
    """PSI of the cluster shares (KMeans fitted on `reference`), and both share vectors."""
    from sklearn.cluster import KMeans

    k = max(2, min(clusters, len(reference) // 2))
    model = KMeans(n_clusters=k, random_state=seed, n_init=4).fit(reference)
    ref_counts = np.bincount(model.labels_, minlength=k)
    cur_counts = np.bincount(model.predict(current), minlength=k)
    # Half a query added to every cluster (Laplace smoothing) keeps the PSI finite and stops
    # one nearly empty cluster from dominating it.
    psi = float(
        entropy(cur_counts + _SMOOTHING, ref_counts + _SMOOTHING)
        + entropy(ref_counts + _SMOOTHING, cur_counts + _SMOOTHING)
    )
    return psi, ref_counts / len(reference), cur_counts / len(current)


def classifier_test(
    reference: np.ndarray, current: np.ndarray, *, permutations: int, seed: int = 0
) -> tuple[float, float]:
    """Cross-validated ROC AUC of telling the windows apart, and its permutation p-value."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, permutation_test_score

    x = np.vstack([reference, current])
    y = np.concatenate([np.zeros(len(reference), int), np.ones(len(current), int)])
    folds = min(3, int(min(len(reference), len(current))))
    score, _, p_value = permutation_test_score(
        LogisticRegression(max_iter=500, C=1.0),
        x,
        y,
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        n_permutations=permutations,
        scoring="roc_auc",
        random_state=seed,
    )
    return float(score), float(p_value)


def detect_drift(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    clusters: int = 5,
    permutations: int = 200,
    seed: int = 0,
) -> DriftResult:
    """Both tests on two windows of embeddings (rows are queries; fixed seed: repeatable)."""
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError("reference and current must be (n, d) arrays of one dimension")
    if len(reference) < 4 or len(current) < 4:
        raise ValueError("drift needs at least 4 queries in each window")
    from threadpoolctl import threadpool_limits

    # Hundreds of small fits: BLAS threads only contend with each other (10x slower on a
    # busy machine), one thread each is fastest.
    with threadpool_limits(limits=1):
        psi, ref, cur = cluster_psi(reference, current, clusters=clusters, seed=seed)
        auc, p_value = classifier_test(reference, current, permutations=permutations, seed=seed)
    return DriftResult(
        psi=psi,
        auc=auc,
        p_value=p_value,
        reference_shares=tuple(float(v) for v in ref),
        current_shares=tuple(float(v) for v in cur),
        reference_n=len(reference),
        current_n=len(current),
    )
