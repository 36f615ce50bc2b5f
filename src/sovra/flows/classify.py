"""Classifiers for the `classify` step: trained from labelled history, or zero-shot from label names.

`TrainedClassifier` is TF-IDF word (1–2-gram) and character (2–5-gram) features, optionally
concatenated with the workspace embedder's vectors, into a class-balanced logistic regression.
That design won on held-out macro-F1 on the IT-ticket history (docs/benchmarks.md, "Triage
classification"); MiniLM vectors added no measurable gain there and cost minutes of embedding,
so they are opt-in. Confidence is the logistic regression's probability of the chosen label;
with balanced class weights it leans towards rare labels, which is why the evaluation reports
its calibration error next to macro-F1.

A trained model lives in `<home>/classifiers/<name>/`: `model.pkl` (written only by sovra)
and `manifest.json` (labels, training-set sha256 and size, date, metrics, the model file's
sha256). `load_classifier` verifies the sha256 before unpickling and refuses a changed file:
unpickling runs code, so only the exact bytes sovra wrote are ever loaded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sovra import __version__
from sovra.flows.base import FlowError, FlowNotFound, Prediction
from sovra.models.base import Embedder

FORMAT = 1
MODEL_FILE = "model.pkl"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise FlowError(
            f"classifier name {name!r} is not valid; use lower-case letters, digits, '-' or '_'"
            " (e.g. ticket-category)"
        )
    return name


def classifier_dir(home: Path, name: str) -> Path:
    return home / "classifiers" / check_name(name)


def training_sha256(texts: Sequence[str], labels: Sequence[str]) -> str:
    """Identifies the exact training set (order included), recorded in the manifest."""
    h = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        h.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- evaluation helpers, shared with `sovra eval triage` ---------------------------------------


def stratified_split(
    labels: Sequence[str], holdout: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): per label, a seeded `holdout` share goes to test.

    A label with one example stays in training only (it cannot be both learnt and tested); a
    label with two or more sends at least one to test, so every testable label is scored.
    """
    if not 0.0 < holdout < 1.0:
        raise FlowError(f"holdout must be between 0 and 1 (got {holdout}); e.g. --holdout 0.2")
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for label in sorted(set(labels)):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        n = len(members)
        k = 0 if n < 2 else min(n - 1, max(1, round(holdout * n)))
        test.extend(int(i) for i in members[:k])
    test_idx = np.array(sorted(test), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


@dataclass
class Scores:
    macro_f1: float
    accuracy: float
    ece: float | None
    per_label_f1: dict[str, float]
    test_size: int


def score(
    truth: Sequence[str], predicted: Sequence[str], confidence: Sequence[float] | None = None
) -> Scores:
    """Macro-F1 over every label in the truth or the predictions (scikit-learn's default)."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(truth) | set(predicted))
    per = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
    return Scores(
        macro_f1=float(np.mean(per)),
        accuracy=float(accuracy_score(truth, predicted)),
        ece=None
        if confidence is None
        else expected_calibration_error(truth, predicted, confidence),
        per_label_f1={lab: round(float(v), 4) for lab, v in zip(labels, per, strict=True)},
        test_size=len(truth),
    )


def expected_calibration_error(
    truth: Sequence[str], predicted: Sequence[str], confidence: Sequence[float], bins: int = 10
) -> float:
    """Mean |accuracy − confidence| over equal-width confidence bins, weighted by bin size."""
    correct = np.array([t == p for t, p in zip(truth, predicted, strict=True)], dtype=float)
    conf = np.asarray(confidence, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            total += mask.sum() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total / max(len(conf), 1))


# -- the trained classifier --------------------------------------------------------------------


@dataclass
class TrainedClassifier:
    """TF-IDF (+ optional embeddings) into a class-balanced logistic regression."""

    labels: tuple[str, ...]
    word: Any
    char: Any
    head: Any
    embedder_name: str | None = None
    embedding_weight: float = 1.0
    manifest: dict[str, Any] = field(default_factory=dict)
    embedder: Embedder | None = field(default=None, repr=False)

    def features(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> Any:
        from scipy.sparse import csr_matrix, hstack

        parts = [self.word.transform(texts), self.char.transform(texts)]
        if self.embedder_name is not None:
            if embeddings is None:
                if self.embedder is None:
                    raise FlowError(
                        f"classifier was trained with embeddings from {self.embedder_name!r};"
                        " load it with that embedder"
                    )
                embeddings = self.embedder.embed(list(texts))
            parts.append(csr_matrix(np.asarray(embeddings) * self.embedding_weight))
        return hstack(parts).tocsr()

    def predict(
        self, texts: Sequence[str], *, embeddings: np.ndarray | None = None
    ) -> list[Prediction]:
        if not texts:
            return []
        proba = self.head.predict_proba(self.features(texts, embeddings))
        classes = [str(c) for c in self.head.classes_]
        out = []
        for row in proba:
            best = int(np.argmax(row))
            scores = {c: round(float(p), 6) for c, p in zip(classes, row, strict=True)}
            out.append(Prediction(label=classes[best], confidence=float(row[best]), scores=scores))
        return out

    def save(self, directory: Path) -> Path:
        """Write `model.pkl` and `manifest.json` (with the model's sha256) atomically."""
        import sklearn

        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        try:
            state = {
                "format": FORMAT,
                "labels": self.labels,
                "word": self.word,
                "char": self.char,
                "head": self.head,
                "embedder_name": self.embedder_name,
                "embedding_weight": self.embedding_weight,
            }
            (tmp / MODEL_FILE).write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            manifest = dict(self.manifest) | {
                "format": FORMAT,
                "labels": list(self.labels),
                "embedder": self.embedder_name,
                "model_sha256": file_sha256(tmp / MODEL_FILE),
                "sovra_version": __version__,
                "sklearn_version": sklearn.__version__,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            if directory.exists():
                shutil.rmtree(directory)
            tmp.rename(directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        return directory


def fit(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    embeddings: np.ndarray | None = None,
    embedder_name: str | None = None,
    c: float = 4.0,
) -> TrainedClassifier:
    """Fit the features and the head; `embeddings` (one row per text) are concatenated if given."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if len(texts) != len(labels):
        raise FlowError(f"{len(texts)} texts but {len(labels)} labels; they must pair up")
    if len(set(labels)) < 2:
        raise FlowError("training needs at least two different labels")
    min_df = 2 if len(texts) >= 50 else 1
    word = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=min_df)
    char = TfidfVectorizer(
        sublinear_tf=True,
        analyzer="char_wb",
        ngram_range=(2, 5),
        min_df=min_df,
        max_features=200_000,
    )
    word.fit(texts)
    char.fit(texts)
    model = TrainedClassifier(
        labels=tuple(sorted(set(labels))),
        word=word,
        char=char,
        head=LogisticRegression(C=c, class_weight="balanced", max_iter=3000),
        embedder_name=embedder_name if embeddings is not None else None,
    )
    model.head.fit(model.features(texts, embeddings), list(labels))
    return model


def train_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    embedder: Embedder | None = None,
    embeddings: np.ndarray | None = None,
    progress: Progress = _quiet,
) -> TrainedClassifier:
    """Train on every example; `embedder` given = also use its vectors (see module docstring)."""
    texts = [str(t) for t in texts]
    labels = [str(lab) for lab in labels]
    if embedder is not None and embeddings is None:
        progress(f"embedding {len(texts)} texts")
        embeddings = embedder.embed(texts)
    progress(f"fitting on {len(texts)} examples")
    model = fit(
        texts,
        labels,
        embeddings=embeddings,
        embedder_name=embedder.name if embedder is not None else None,
    )
    model.embedder = embedder
    model.manifest = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {
            "sha256": training_sha256(texts, labels),
            "size": len(texts),
            "label_counts": dict(sorted(Counter(labels).items())),
        },
        "design": "tfidf word 1-2 + char_wb 2-5"
        + (f" + {embedder.name} embeddings" if embedder is not None else "")
        + " -> LogisticRegression(C=4, class_weight=balanced)",
    }
    return model


def read_manifest(home: Path, name: str) -> dict[str, Any]:
    directory = classifier_dir(home, name)
    path = directory / MANIFEST
    if not path.is_file():
        raise FlowNotFound(
            f"no classifier named {name!r} in {directory.parent}; train it with"
            f" `sovra flow classifier train {name} --from FILE.csv --text COLUMNS --label COLUMN`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise FlowError(f"{path} is not valid JSON ({exc}); retrain classifier {name!r}") from None
    if not isinstance(manifest, dict):
        raise FlowError(f"{path} is not a classifier manifest; retrain classifier {name!r}")
    return manifest


def list_classifiers(home: Path) -> list[dict[str, Any]]:
    root = home / "classifiers"
    if not root.is_dir():
        return []
    found = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and _NAME.match(d.name) and (d / MANIFEST).is_file():
            found.append({"name": d.name} | read_manifest(home, d.name))
    return found


def load_classifier(home: Path, name: str, embedder: Embedder | None = None) -> TrainedClassifier:
    """The classifier saved under `<home>/classifiers/<name>/`, after checking its sha256."""

    manifest = read_manifest(home, name)
    directory = classifier_dir(home, name)
    model_path = directory / MODEL_FILE
    expected = manifest.get("model_sha256")
    if manifest.get("format") != FORMAT or not isinstance(expected, str):
        raise FlowError(
            f"classifier {name!r} was saved in an unknown format; retrain it with"
            f" `sovra flow classifier train {name} ...`"
        )
    if not model_path.is_file():
        raise FlowError(f"classifier {name!r} has no {MODEL_FILE} in {directory}; retrain it")
    blob = model_path.read_bytes()  # hash and unpickle the same bytes, not the file twice
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise FlowError(
            f"refusing to load classifier {name!r}: {model_path} changed since sovra wrote it"
            f" (sha256 {actual[:12]}…, manifest says {expected[:12]}…); retrain it"
        )
    # Safe only because the bytes match the sha256 sovra recorded when it wrote them.
    state = pickle.loads(blob)
    wanted = state["embedder_name"]
    if wanted is not None and (embedder is None or embedder.name != wanted):
        have = "none" if embedder is None else repr(embedder.name)
        raise FlowError(
            f"classifier {name!r} needs embeddings from {wanted!r} but the embedder is {have};"
            " set [embedding] to that model or retrain the classifier"
        )
    return TrainedClassifier(
        labels=tuple(state["labels"]),
        word=state["word"],
        char=state["char"],
        head=state["head"],
        embedder_name=wanted,
        embedding_weight=float(state["embedding_weight"]),
        manifest=manifest,
        embedder=embedder if wanted is not None else None,
    )


# -- zero-shot ---------------------------------------------------------------------------------


class ZeroShotClassifier:
    """For a step that only lists labels: cosine between the text and each label's description.

    Confidence is a softmax over the cosines (temperature 0.05, the spread MiniLM cosines have);
    it ranks labels, but it is not a measured probability like a trained classifier's.
    """

    def __init__(
        self,
        labels: Sequence[str],
        embedder: Embedder,
        descriptions: Mapping[str, str] | None = None,
        *,
        temperature: float = 0.05,
    ) -> None:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise FlowError("a zero-shot classifier needs at least two distinct labels")
        unknown = set(descriptions or {}) - set(labels)
        if unknown:
            raise FlowError(f"descriptions for unknown labels: {', '.join(sorted(unknown))}")
        self.labels = tuple(labels)
        self.embedder = embedder
        self.descriptions = dict(descriptions or {})
        self.temperature = temperature
        self._label_vectors: np.ndarray | None = None

    def _label_texts(self) -> list[str]:
        return [
            f"{lab}: {self.descriptions[lab]}"
            if lab in self.descriptions
            else lab.replace("_", " ")
            for lab in self.labels
        ]

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        if self._label_vectors is None:
            self._label_vectors = np.asarray(self.embedder.embed(self._label_texts()))
        sims = np.asarray(self.embedder.embed(list(texts))) @ self._label_vectors.T
        out = []
        for row in sims:
            z = (row - row.max()) / self.temperature
            p = np.exp(z) / np.exp(z).sum()
            best = int(np.argmax(p))
            out.append(
                Prediction(
                    label=self.labels[best],
                    confidence=float(p[best]),
                    scores={lab: round(float(v), 6) for lab, v in zip(self.labels, p, strict=True)},
                )
            )
        return out


# -- labelled history from CSV -----------------------------------------------------------------


def read_labelled_csv(
    path: Path, text_columns: Sequence[str], label_column: str
) -> tuple[list[str], list[str], int]:
    """(texts, labels, rows skipped for an empty label); text = the columns joined by newlines."""
    import csv

    if not path.is_file():
        raise FlowError(f"training file {path} not found; pass an existing CSV with --from")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        missing = [c for c in [*text_columns, label_column] if c not in columns]
        if missing:
            raise FlowError(
                f"{path} has no column(s) {', '.join(missing)}; its columns are"
                f" {', '.join(columns) or 'none (empty file?)'}"
            )
        texts: list[str] = []
        labels: list[str] = []
        skipped = 0
        for row in reader:
            label = (row.get(label_column) or "").strip()
            if not label:
                skipped += 1
                continue
            parts = [(row.get(c) or "").strip() for c in text_columns]
            texts.append("\n".join(p for p in parts if p))
            labels.append(label)
    if not texts:
        raise FlowError(f"{path} holds no rows with a {label_column!r} label")
    return texts, labels, skipped
