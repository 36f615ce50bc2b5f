"""The trained and zero-shot classifiers, their saved form, and `sovra flow classifier`."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sovra.cli.classifiers import classifier_app
from sovra.cli.kit import CliState
from sovra.flows.base import Classifier, FlowError
from sovra.flows.classify import (
    ZeroShotClassifier,
    classifier_dir,
    expected_calibration_error,
    load_classifier,
    read_labelled_csv,
    score,
    stratified_split,
    train_classifier,
)

# A small, learnable labelled history: each label has its own vocabulary plus shared noise.
VOCAB = {
    "network": ["vpn", "wifi", "router", "dns", "latency", "firewall", "proxy"],
    "access": ["password", "login", "account", "locked", "permission", "sso", "mfa"],
    "hardware": ["laptop", "screen", "keyboard", "printer", "battery", "dock", "mouse"],
}
NOISE = ["please", "help", "thanks", "urgent", "today", "user", "issue", "hi", "team"]


def history(n_per_label: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in VOCAB.items():
        for _ in range(n_per_label):
            tokens = rng.sample(words, 2) + rng.sample(NOISE, 4)
            rng.shuffle(tokens)
            texts.append(" ".join(tokens))
            labels.append(label)
    return texts, labels


def test_trained_classifier_learns_and_scores_in_unit_range() -> None:
    texts, labels = history(40)
    model = train_classifier(texts, labels)
    assert isinstance(model, Classifier)
    assert model.labels == ("access", "hardware", "network")
    preds = model.predict(["my vpn drops and dns fails", "account locked after mfa reset"])
    assert [p.label for p in preds] == ["network", "access"]
    for p in preds:
        assert 0.0 <= p.confidence <= 1.0
        assert set(p.scores) == set(model.labels)
        assert abs(sum(p.scores.values()) - 1.0) < 1e-3
        assert p.confidence == pytest.approx(max(p.scores.values()), abs=1e-5)
    assert model.predict([]) == []
    assert model.manifest["training"]["size"] == 120


def test_save_load_roundtrip_and_manifest(tmp_path: Path) -> None:
    texts, labels = history(30)
    model = train_classifier(texts, labels)
    directory = model.save(classifier_dir(tmp_path, "ticket-category"))
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["labels"] == ["access", "hardware", "network"]
    assert manifest["training"]["size"] == 90 and len(manifest["training"]["sha256"]) == 64
    assert len(manifest["model_sha256"]) == 64 and manifest["created"]
    loaded = load_classifier(tmp_path, "ticket-category", None)
    probe = ["printer out of battery", "sso login broken"]
    assert [p.label for p in loaded.predict(probe)] == [p.label for p in model.predict(probe)]
    # Saving again replaces the model in place (no stale files left behind).
    train_classifier(*history(20, seed=1)).save(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "model.pkl"]
    assert [p.name for p in directory.parent.iterdir()] == ["ticket-category"]


def test_changed_model_file_is_refused(tmp_path: Path) -> None:
    model = train_classifier(*history(20))
    directory = model.save(classifier_dir(tmp_path, "c"))
    blob = bytearray((directory / "model.pkl").read_bytes())
    blob[-10] ^= 0xFF
    (directory / "model.pkl").write_bytes(bytes(blob))
    with pytest.raises(FlowError, match=r"refusing to load classifier 'c'.*changed"):
        load_classifier(tmp_path, "c", None)


def test_missing_classifier_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="sovra flow classifier train ticket-urgency"):
        load_classifier(tmp_path, "ticket-urgency", None)
    with pytest.raises(FlowError, match="not valid"):
        load_classifier(tmp_path, "../etc", None)


class FakeEmbedder:
    """Bag-of-words hashing into 64 dimensions, L2-normalised: deterministic, no model needed."""

    name = "fake-bow"
    dimension = 64
    languages = frozenset({"en"})

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(":", " ").split():
                out[i, sum(map(ord, w)) % self.dimension] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def test_embeddings_are_recorded_and_required_on_load(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    model = train_classifier(*history(20), embedder=emb)
    model.save(classifier_dir(tmp_path, "e"))
    with pytest.raises(FlowError, match="needs embeddings from 'fake-bow'"):
        load_classifier(tmp_path, "e", None)
    loaded = load_classifier(tmp_path, "e", emb)
    assert loaded.predict(["wifi router"])[0].label == "network"


def test_zero_shot_uses_label_descriptions() -> None:
    clf = ZeroShotClassifier(
        ["network", "access"],
        FakeEmbedder(),
        descriptions={"network": "vpn wifi router dns", "access": "password login account"},
    )
    preds = clf.predict(["vpn and wifi down", "forgot password for login"])
    assert [p.label for p in preds] == ["network", "access"]
    assert all(0.5 < p.confidence <= 1.0 for p in preds)
    with pytest.raises(FlowError, match="unknown labels"):
        ZeroShotClassifier(["a", "b"], FakeEmbedder(), descriptions={"c": "x"})


def test_stratified_split_keeps_single_example_labels_in_training() -> None:
    labels = ["a"] * 50 + ["b"] * 10 + ["c"] * 2 + ["d"]
    train, test = stratified_split(labels, 0.2, seed=42)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == len(labels)
    test_labels = [labels[i] for i in test]
    assert test_labels.count("a") == 10 and test_labels.count("b") == 2
    assert test_labels.count("c") == 1 and "d" not in test_labels
    again = stratified_split(labels, 0.2, seed=42)
    assert list(again[1]) == list(test)
    assert list(stratified_split(labels, 0.2, seed=7)[1]) != list(test)


def test_score_macro_f1_counts_invented_labels() -> None:
    s = score(["a", "a", "b"], ["a", "a", "c"])
    # a: F1 1; b: never predicted, F1 0; c: predicted but absent, F1 0.
    assert s.macro_f1 == pytest.approx(1 / 3)
    assert s.accuracy == pytest.approx(2 / 3)
    assert expected_calibration_error(["a", "b"], ["a", "a"], [1.0, 1.0]) == pytest.approx(0.5)


def test_read_labelled_csv_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("title,body,category\nVPN,down,4\nx,y,\n", encoding="utf-8")
    texts, labels, skipped = read_labelled_csv(path, ["title", "body"], "category")
    assert (texts, labels, skipped) == (["VPN\ndown"], ["4"], 1)
    with pytest.raises(FlowError, match="no column\\(s\\) urgency; its columns are title, body"):
        read_labelled_csv(path, ["title", "body"], "urgency")


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = CliState()

    app.add_typer(classifier_app, name="classifier")
    return app


def test_cli_train_list_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVRA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    texts, labels = history(30)
    data = tmp_path / "tickets.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["title", "body", "kind"])
        for t, lab in zip(texts, labels, strict=True):
            w.writerow([t.split()[0], t, lab])
    runner = CliRunner()
    result = runner.invoke(
        cli(),
        ["classifier", "train", "kinds", "--from", str(data), "--label", "kind", "--json"],
    )
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)
    assert trained["metrics"]["test_size"] == 18
    assert trained["metrics"]["macro_f1"] > 0.8  # the vocabularies are separable
    listed = runner.invoke(cli(), ["classifier", "list", "--json"])
    assert [c["name"] for c in json.loads(listed.stdout)] == ["kinds"]
    shown = runner.invoke(cli(), ["classifier", "show", "kinds"])
    assert shown.exit_code == 0 and "held-out" in shown.stdout
    missing = runner.invoke(cli(), ["classifier", "show", "nope"])
    assert missing.exit_code == 1 and "no classifier named 'nope'" in missing.output
    bad = runner.invoke(
        cli(), ["classifier", "train", "x", "--from", str(data), "--label", "category"]
    )
    assert bad.exit_code == 1 and "no column(s) category" in bad.output
