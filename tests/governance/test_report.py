"""The compliance report against a log of known events: its figures are what the log holds, a
tampered log makes it say so instead of printing figures, the PDF carries the figures, and
`sovra audit verify-report` accepts a fresh report and rejects an edited one."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from sovra.cli import app
from sovra.governance.evidence import verify_bundle
from sovra.governance.report import build_report, bundle_json, render_html, render_pdf
from sovra.workspace import Workspace
from tests.support.governance import EXPECTED, T0, known_site


@pytest.fixture
def ws(tmp_path: Path) -> Any:
    workspace = known_site(tmp_path / "site")
    yield workspace
    workspace.close()


def figures(bundle: dict[str, Any]) -> dict[str, Any]:
    return {f["id"]: f for f in bundle["figures"]}


def test_figures_equal_what_the_log_holds(ws: Workspace) -> None:
    bundle = build_report(ws, runs=[], record=False)
    f = figures(bundle)
    assert bundle["verification"]["ok"] is True
    assert f["flow.handbook.eu-cloud.sends"]["value"] == EXPECTED["sends handbook→eu-cloud"]
    assert f["flow.handbook.eu-cloud.chunks"]["value"] == EXPECTED["passages handbook→eu-cloud"]
    assert f["flow.tickets.local-llm.sends"]["value"] == EXPECTED["sends tickets→local-llm"]
    assert f["refusals.routing"]["value"] == EXPECTED["refusals"]
    assert f["denials.rule.confidential-not-foreign"]["value"] == 1
    assert f["oversight.approval_requests"]["value"] == EXPECTED["approval requests"]
    assert f["oversight.approved"]["value"] == EXPECTED["approved"]
    assert f["oversight.rejected"]["value"] == EXPECTED["rejected"]
    assert f["oversight.votes_refused"]["value"] == EXPECTED["votes refused"]
    assert f["oversight.overrides"]["value"] == EXPECTED["overrides"]
    assert f["oversight.kill_on"]["value"] == EXPECTED["kill switch on"]
    assert f["oversight.decision_median"]["value"] == EXPECTED["median decision seconds"]
    assert f["oversight.decision_max"]["value"] == EXPECTED["max decision seconds"]
    assert f["tokens.eu-cloud.in"]["value"] == EXPECTED["tokens to eu-cloud"]
    assert f["erasures.total"]["value"] == EXPECTED["erasures"]
    assert bundle["sections"]["erasures"]["verified"] is True
    # Independently of the report's code: what `sovra audit show` would list, counted by action.
    logged = list(ws.audit.events())
    by_action = Counter(e.view["action"] for e in logged)
    assert f["logging.entries"]["value"] == len(logged) == ws.audit.size
    for action, count in by_action.items():
        fig = f[f"logging.action.{action}"]
        assert fig["value"] == count
        assert [e.index for e in logged if e.view["action"] == action] == fig["leaves"]
    # Each figure's leaves are entries that really are what it counts.
    views = {e.index: e.view for e in logged}
    assert all(
        views[i]["action"] == "flow.approval.vote" for i in f["oversight.approved"]["leaves"]
    )
    assert [views[i]["outcome"] for i in f["oversight.rejected"]["leaves"]] == ["rejected"]


def test_a_period_counts_only_its_entries(ws: Workspace) -> None:
    from datetime import timedelta

    bundle = build_report(ws, T0 + timedelta(minutes=10), T0 + timedelta(minutes=20), runs=[])
    f = figures(bundle)
    assert f["oversight.approved"]["value"] == 1
    assert f["oversight.rejected"]["value"] == 0
    assert "flow.handbook.eu-cloud.sends" not in f
    ev = bundle["evidence"]
    assert ev["before"] is not None and ev["after"] is not None
    assert verify_bundle(bundle, ws.audit.public_keys()).ok
    # Leaving out the period's first entry (and claiming the range starts later) is caught.
    cut = copy.deepcopy(bundle)
    cut["evidence"]["before"] = cut["evidence"]["entries"].pop(0)
    cut["evidence"]["first"] += 1
    check = verify_bundle(cut, ws.audit.public_keys())
    assert not check.ok
    assert any("just before the range" in p for p in check.problems), check.problems


def test_a_tampered_log_makes_the_report_say_verification_failed(tmp_path: Path) -> None:
    ws = known_site(tmp_path / "site")
    ws.audit.close()
    db = sqlite3.connect(tmp_path / "site" / "data" / "audit" / "log.sqlite")
    data = db.execute("SELECT data FROM entries WHERE idx = 4").fetchone()[0]
    db.execute(
        "UPDATE entries SET data = ? WHERE idx = 4", (data.replace(b"local-llm", b"eu-cloud!"),)
    )
    db.commit()
    db.close()
    ws._audit = None
    try:
        bundle = build_report(ws, runs=[])
        html = render_html(bundle)
    finally:
        ws.close()
    assert bundle["verification"]["ok"] is False
    assert bundle["verification"]["bad_index"] == 4
    assert bundle["figures"] == [] and bundle["sections"] == {}
    assert "Audit log verification FAILED" in html
    assert "Records of processing" not in html and "entries #" not in html
    assert not verify_bundle(bundle, []).ok


def test_pdf_renders_and_its_text_holds_the_figures(
    ws: Workspace, tmp_path: Path, record_property: Any
) -> None:
    started = time.perf_counter()
    bundle = build_report(ws, runs=[])
    built = time.perf_counter()
    pdf = render_pdf(bundle)
    done = time.perf_counter()
    # Recorded for the record (docs/benchmarks.md has the demo-site numbers), not asserted.
    record_property("build_seconds", round(built - started, 3))
    record_property("pdf_seconds", round(done - built, 3))
    (tmp_path / "report.pdf").write_bytes(pdf)
    reader = PdfReader(tmp_path / "report.pdf")
    record_property("pages", len(reader.pages))
    print(
        f"report: build {built - started:.2f} s, pdf {done - built:.2f} s, {len(reader.pages)} pages"
    )
    text = " ".join(page.extract_text() for page in reader.pages)
    flat = " ".join(text.split())
    assert "Audit log verified" in flat
    assert "Human oversight (AI Act Art. 14)" in flat
    f = figures(bundle)
    for fid in ("oversight.decision_median", "tokens.eu-cloud.in", "logging.entries"):
        value = f[fid]["value"]
        shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        assert shown in flat, (fid, shown)
    assert "Median time to decision, seconds 450.0" in flat
    assert "Approved 1 (entries" in flat
    assert "Kill switch set 1 (entries" in flat
    assert "confidential-not-foreign 1 (entries" in flat


def _cli(home_cfg: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(home_cfg), *args])


def test_verify_report_passes_fresh_and_fails_on_any_edit(tmp_path: Path) -> None:
    ws = known_site(tmp_path / "site")
    ws.close()
    cfg = tmp_path / "site" / "sovra.toml"
    report = tmp_path / "report.json"
    made = _cli(cfg, "report", "compliance", "--format", "json", "-o", str(report))
    assert made.exit_code == 0, made.output
    ok = _cli(cfg, "audit", "verify-report", str(report), "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    bundle = json.loads(report.read_text())

    def rejected(edit: Any, expect: str) -> None:
        changed = copy.deepcopy(bundle)
        edit(changed)
        path = tmp_path / "edited.json"
        path.write_text(bundle_json(changed))
        result = _cli(cfg, "audit", "verify-report", str(path), "--json")
        assert result.exit_code == 1, result.output
        problems = json.loads(result.stdout)["problems"]
        assert any(expect in p for p in problems), problems

    def bump(b: dict[str, Any]) -> None:
        next(f for f in b["figures"] if f["id"] == "oversight.approved")["value"] = 7

    def drop_leaf(b: dict[str, Any]) -> None:
        next(f for f in b["figures"] if f["id"] == "refusals.routing")["leaves"] = []

    def bad_proof(b: dict[str, Any]) -> None:
        proof = b["evidence"]["entries"][3]["proof"]
        proof[0] = proof[1]

    def bad_entry(b: dict[str, Any]) -> None:
        import base64

        e = b["evidence"]["entries"][5]
        raw = base64.b64decode(e["entry"]).replace(b'"deny"', b'"allow"')
        e["entry"] = base64.b64encode(raw).decode()

    def other_key(b: dict[str, Any]) -> None:
        lines = b["log"]["checkpoint"].split("\n")
        lines[2] = "A" * 43 + "="
        b["log"]["checkpoint"] = "\n".join(lines)

    rejected(bump, "figure oversight.approved: the report says 7")
    rejected(drop_leaf, "figure refusals.routing")
    rejected(bad_proof, "entry 3: inclusion proof")
    rejected(bad_entry, "entry 5: inclusion proof")
    rejected(other_key, "checkpoint signature")
    rejected(lambda b: b["evidence"]["entries"].pop(), "does not hold every entry")
    # The HTML of the same report names the checkpoint and links each figure to its entries.
    html = tmp_path / "report.html"
    assert _cli(cfg, "report", "compliance", "-o", str(html)).exit_code == 0
    text = html.read_text()
    assert 'href="#leaf-' in text and 'id="leaf-0"' in text


def test_the_cli_exits_1_when_the_log_fails_verification(tmp_path: Path) -> None:
    ws = known_site(tmp_path / "site")
    ws.close()
    db = sqlite3.connect(tmp_path / "site" / "data" / "audit" / "log.sqlite")
    db.execute("DELETE FROM entries WHERE idx = 2")
    db.commit()
    db.close()
    out = tmp_path / "r.pdf"
    result = _cli(
        tmp_path / "site" / "sovra.toml", "report", "compliance", "--format", "pdf", "-o", str(out)
    )
    assert result.exit_code == 1
    text = " ".join(p.extract_text() for p in PdfReader(out).pages)
    assert "verification FAILED" in " ".join(text.split())


def test_accuracy_comes_from_tracked_mlflow_runs(ws: Workspace) -> None:
    from sovra.evals.tracking import record_run, tracking_uri

    uri = tracking_uri(ws.config)
    params = {"sovra_version": "test"}
    record_run(uri, "retrieval", params=params, metrics={"handbook.hybrid.ndcg_at_10": 0.61})
    time.sleep(0.01)  # distinct start times: MLflow orders by millisecond
    latest = record_run(
        uri, "retrieval", params=params, metrics={"handbook.hybrid.ndcg_at_10": 0.67}
    )
    bundle = build_report(ws, record=False)
    acc = bundle["sections"]["accuracy"]
    assert acc["available"] is True
    assert [(r["suite"], r["run_id"]) for r in acc["latest"]] == [("retrieval", latest.run_id)]
    assert acc["latest"][0]["metrics"] == {"handbook.hybrid.ndcg_at_10": 0.67}
    assert [r["metrics"]["handbook.hybrid.ndcg_at_10"] for r in acc["trend"]["retrieval"]] == [
        0.61,
        0.67,
    ]
    ask = next(s for s in bundle["sections"]["inventory"]["systems"] if s["id"] == "assistant:ask")
    assert [e["run_id"] for e in ask["evaluations"]] == [latest.run_id]
    html = render_html(bundle)
    assert 'aria-label="Evaluation metrics over runs"' in html
    assert "handbook.hybrid.ndcg_at_10 = 0.670" in html


def test_report_usage_is_a_command(ws: Workspace) -> None:
    result = _cli(ws.config.base_dir / "sovra.toml", "report", "usage", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == []


def test_an_empty_period_between_entries_still_verifies(ws: Workspace) -> None:
    from datetime import timedelta

    # Between the kill switch (T0 + 33 min) and the erasure (now): no entries.
    bundle = build_report(ws, T0 + timedelta(hours=1), T0 + timedelta(hours=2), runs=[])
    ev = bundle["evidence"]
    assert ev["entries"] == [] and ev["before"] is not None and ev["after"] is not None
    assert figures(bundle)["logging.entries"]["value"] == 0
    check = verify_bundle(bundle, ws.audit.public_keys())
    assert check.ok, check.problems


def test_charts_carry_no_inline_style() -> None:
    """The governance page's CSP (style-src 'self') blocks style attributes and <style>."""
    from sovra.governance import report

    fig = report._figure(3, 2)
    fig.add_subplot().bar(["a", "b"], [1, 2])
    svg = str(report._svg(fig, "a chart"))
    assert "<svg" in svg and "<path" in svg
    assert "style=" not in svg and "<style" not in svg
    assert 'fill="' in svg  # the colours survive as presentation attributes
