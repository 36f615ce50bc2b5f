"""`sovra eval triage` on a sample of the real IT tickets and through the CLI."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sovra.cli import app
from sovra.evals.triage_eval import evaluate_triage


def sample_tickets(shared_data: Path, dest: Path, per_label: int, seed: int = 0) -> Path:
    """Up to `per_label` tickets of each category (all of the rare ones), as a smaller CSV."""
    source = shared_data / "company" / "tickets" / "it_tickets.csv"
    with source.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in reader:
            by_label[row["category"]].append(row)
    rng = random.Random(seed)
    rows = []
    for label in sorted(by_label):
        group = by_label[label]
        rows += rng.sample(group, min(per_label, len(group)))
    with dest.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return dest


def test_sovra_beats_majority_and_default_tfidf_lr_on_real_tickets(
    shared_data: Path, tmp_path: Path
) -> None:
    data = sample_tickets(shared_data, tmp_path / "tickets.csv", per_label=250)
    report = evaluate_triage(data, targets=["category"], seeds=[42])
    (cat,) = report.targets
    # Category 12 has a single ticket: it can only be trained on, and the report says so.
    assert cat.untestable == ["12"]
    m = cat.methods
    assert set(m) == {"majority", "tfidf_lr", "tfidf_lr_balanced", "sovra"}
    assert m["sovra"].macro_f1 > m["tfidf_lr"].macro_f1 > m["majority"].macro_f1
    assert m["sovra"].ece is not None and 0.0 <= m["sovra"].ece <= 1.0
    assert m["majority"].ece is None
    assert 0.0 < m["majority"].accuracy < 1.0 and m["sovra"].macro_f1_std == 0.0


def test_cli_eval_triage_json_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOVRA_HOME", str(tmp_path / "home"))
    data = sample_tickets(shared_data, tmp_path / "tickets.csv", per_label=40, seed=1)
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["eval", "triage", "--data", str(data), "--target", "urgency", "--repeats", "2", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["seeds"] == [42, 43]
    (urgency,) = report["targets"]
    assert urgency["target"] == "urgency" and urgency["test_size"] > 0
    assert set(urgency["methods"]) == {"majority", "tfidf_lr", "tfidf_lr_balanced", "sovra"}
    text = runner.invoke(app, ["eval", "triage", "--data", str(data), "--target", "category"])
    assert text.exit_code == 0 and "sovra" in text.stdout and "macro-F1" in text.stdout
    missing = runner.invoke(app, ["eval", "triage", "--data", str(tmp_path / "none.csv")])
    assert missing.exit_code == 1 and "pass --data" in missing.output
    wrong = runner.invoke(app, ["eval", "triage", "--data", str(data), "--target", "impactx"])
    assert wrong.exit_code == 1 and "no column(s) impactx" in wrong.output
