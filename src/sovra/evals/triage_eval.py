"""`sovra eval triage`: macro-F1 of ticket classification against two baselines.

On a fixed, seeded, per-label stratified held-out split (`flows.classify.stratified_split`) of
labelled tickets, for each target column (category, urgency):

- `majority`: always the most frequent training label;
- `tfidf_lr`: scikit-learn `TfidfVectorizer()` + `LogisticRegression()` with defaults — the
  baseline the issue names;
- `tfidf_lr_balanced`: the same with `class_weight="balanced"`, so that sovra's gain is not
  just the class weighting;
- `sovra`: the classifier `sovra flow classifier train` ships (`flows.classify.fit`);
- `sovra_embeddings` (opt-in): the same plus the workspace embedder's vectors.

Macro-F1 averages over every label in the truth or the predictions (scikit-learn's default),
so a label a method invents costs it. Labels with a single example cannot be tested; they stay
in training and are listed as `untestable`. With several seeds the figures are mean and
standard deviation over the seeds' splits, because a rare label with one test row moves
macro-F1 by several points on its own; `macro_f1_per_seed` allows a paired comparison (every
method sees the same split for a seed).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sovra.flows.classify import fit, read_labelled_csv, score, stratified_split
from sovra.models.base import Embedder

TARGETS = ("category", "urgency")
TEXT_COLUMNS = ("title", "body")
Progress = Callable[[int, int, str], None]


@dataclass
class MethodScores:
    macro_f1: float
    accuracy: float
    macro_f1_std: float
    accuracy_std: float
    ece: float | None
    fit_seconds: float
    macro_f1_per_seed: list[float] = field(default_factory=list)


@dataclass
class TargetReport:
    target: str
    label_counts: dict[str, int]
    untestable: list[str]
    test_size: int
    methods: dict[str, MethodScores] = field(default_factory=dict)


@dataclass
class TriageReport:
    data: str
    rows: int
    holdout: float
    seeds: list[int]
    targets: list[TargetReport] = field(default_factory=list)


def _baseline(balanced: bool) -> Callable[[list[str], list[str], list[str]], list[str]]:
    def run(train: list[str], labels: list[str], test: list[str]) -> list[str]:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = TfidfVectorizer()
        head = LogisticRegression(max_iter=1000, class_weight="balanced" if balanced else None)
        head.fit(vec.fit_transform(train), labels)
        return [str(p) for p in head.predict(vec.transform(test))]

    return run


def cached_embeddings(
    embedder: Embedder, texts: Sequence[str], cache_dir: Path | None
) -> np.ndarray:
    h = hashlib.sha256(embedder.name.encode("utf-8"))
    for t in texts:
        h.update(b"\0" + t.encode("utf-8"))
    path = None if cache_dir is None else cache_dir / f"triage-{h.hexdigest()[:24]}.npy"
    if path is not None and path.is_file():
        return np.asarray(np.load(path), dtype=np.float32)
    vectors = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def evaluate_triage(
    path: Path,
    *,
    targets: Sequence[str] = TARGETS,
    holdout: float = 0.2,
    seeds: Sequence[int] = (42,),
    embedder: Embedder | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> TriageReport:
    methods = ["majority", "tfidf_lr", "tfidf_lr_balanced", "sovra"]
    if embedder is not None:
        methods.append("sovra_embeddings")
    total = len(targets) * len(seeds) * len(methods)
    done = 0

    def tick(what: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, total, what)
        done += 1

    report = TriageReport(data=str(path), rows=0, holdout=holdout, seeds=list(seeds))
    vectors: np.ndarray | None = None
    for target in targets:
        texts, labels, _ = read_labelled_csv(path, TEXT_COLUMNS, target)
        report.rows = len(texts)
        if embedder is not None and vectors is None:
            if progress is not None:
                progress(done, total, "embedding tickets (cached after the first run)")
            vectors = cached_embeddings(embedder, texts, cache_dir)
        counts = Counter(labels)
        runs: dict[str, list[tuple[float, float, float | None, float]]] = {m: [] for m in methods}
        test_size = 0
        for seed in seeds:
            train_idx, test_idx = stratified_split(labels, holdout, seed)
            test_size = len(test_idx)
            tr_x = [texts[i] for i in train_idx]
            tr_y = [labels[i] for i in train_idx]
            te_x = [texts[i] for i in test_idx]
            te_y = [labels[i] for i in test_idx]
            for method in methods:
                tick(f"{target} seed {seed}: {method}")
                start = time.perf_counter()
                confidence: list[float] | None = None
                if method == "majority":
                    top = Counter(tr_y).most_common(1)[0][0]
                    predicted = [top] * len(te_x)
                elif method in ("tfidf_lr", "tfidf_lr_balanced"):
                    predicted = _baseline(method.endswith("balanced"))(tr_x, tr_y, te_x)
                else:
                    use = method == "sovra_embeddings" and vectors is not None
                    model = fit(
                        tr_x,
                        tr_y,
                        embeddings=vectors[train_idx] if use and vectors is not None else None,
                        embedder_name=embedder.name if use and embedder is not None else None,
                    )
                    preds = model.predict(
                        te_x, embeddings=vectors[test_idx] if use and vectors is not None else None
                    )
                    predicted = [p.label for p in preds]
                    confidence = [p.confidence for p in preds]
                seconds = time.perf_counter() - start
                s = score(te_y, predicted, confidence)
                runs[method].append((s.macro_f1, s.accuracy, s.ece, seconds))
        target_report = TargetReport(
            target=target,
            label_counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
            untestable=sorted(lab for lab, n in counts.items() if n < 2),
            test_size=test_size,
        )
        for method, rs in runs.items():
            f1s = [r[0] for r in rs]
            accs = [r[1] for r in rs]
            eces = [r[2] for r in rs if r[2] is not None]
            target_report.methods[method] = MethodScores(
                macro_f1=round(float(np.mean(f1s)), 4),
                accuracy=round(float(np.mean(accs)), 4),
                macro_f1_std=round(float(np.std(f1s)), 4),
                accuracy_std=round(float(np.std(accs)), 4),
                ece=round(float(np.mean(eces)), 4) if eces else None,
                fit_seconds=round(float(np.mean([r[3] for r in rs])), 2),
                macro_f1_per_seed=[round(f, 4) for f in f1s],
            )
        report.targets.append(target_report)
    if progress is not None:
        progress(total, total, "done")
    return report
