"""Compliance report generation time, size and page count.

Without `--config` it builds a small demo site (tests/support/demo_site.py: handbook pages and
etcd runbooks synced with the real MiniLM model and the demo permission rules), then produces
activity through the real code paths — extractive asks and searches by the demo users, runs of
a review workflow (retrieve → draft → approve → ticket store) approved, rejected and stopped
by a kill switch, an erasure — and measures `build_report` (log verification, figures, proofs),
HTML, PDF and JSON rendering, the PDF's page count and `verify_bundle`. With `--config
demo/sovra.toml` it measures an existing workspace instead, without writing to its log.

Writes bench/results/report.json. Usage (from the repository root):
    .venv/bin/python -m bench.bench_report [--asks 60] [--runs 12] [--site DIR]
    .venv/bin/python -m bench.bench_report --config demo/sovra.toml     # or DIR/sovra.toml
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.demo_site import CLI_FILES, write_site

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "report.json"
WORKFLOW = """\
name: review
description: Find passages for a question, draft an extractive answer, have it-support approve it.
trigger: manual
inputs:
  question: {type: string}
access: [group:staff]
actions: [ticket_store]
steps:
  - id: related
    kind: retrieve
    query: "${input.question}"
    k: 3
  - id: draft
    kind: draft
    question: "${input.question}"
    extractive: true
  - id: approval
    kind: approve
    group: it-support
  - id: store
    kind: act
    adapter: ticket_store
    params: {op: upsert, ticket_id: "${run.id}", fields: {answer: "${steps.draft.text}"}}
"""
QUESTIONS = (
    "what should I do when etcd database quota is low?",
    "etcd members are down, how do I recover?",
    "what happens on demo day?",
    "how do teams collaborate across departments?",
    "etcd has no leader",
    "high fsync durations on etcd",
    "background check policy for new hires",
    "what is e-verify?",
)
ASKERS = ("alice", "carol", "dana", "bob")


def build_site(root: Path, asks: int, runs: int) -> Path:
    from typer.testing import CliRunner

    from sovra.cli import app
    from sovra.config import load_config
    from sovra.domain import QueryOptions
    from sovra.flows.approvals import ApprovalRefused
    from sovra.workspace import Workspace

    cfg = write_site(root, CLI_FILES)
    runner = CliRunner()
    for args in (["init", "--demo-directory"], ["source", "sync", "--all"]):
        result = runner.invoke(app, ["--config", str(cfg), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    (root / "data" / "workflows").mkdir(parents=True, exist_ok=True)
    (root / "data" / "workflows" / "review.yaml").write_text(WORKFLOW, encoding="utf-8")
    ws = Workspace.open(load_config(cfg))
    try:
        for i in range(asks):
            who = ws.principal(ASKERS[i % len(ASKERS)])
            question = QUESTIONS[i % len(QUESTIONS)]
            for _ in ws.ask(who, question, QueryOptions(extractive=True)):
                pass
            ws.search(who, question, QueryOptions(k=5))
        flows = ws.flows()
        try:
            started = [
                flows.start("review", {"question": QUESTIONS[i % len(QUESTIONS)]}, "carol")
                for i in range(runs)
            ]
            for i, run in enumerate(started):
                if i % 3 == 0:
                    flows.approve(run.id, "bob", "looks right")
                elif i % 3 == 1:
                    flows.reject(run.id, "bob", "wrong runbook")
                else:
                    # Separation of duties: the requester's own vote is refused (and logged).
                    with contextlib.suppress(ApprovalRefused):
                        flows.approve(run.id, "carol")
            flows.kill_switch("review", True, "root", "incident drill")
            flows.kill_switch("review", False, "root", "drill over")
        finally:
            flows.close()
        ws.audit.erase_subject("dana")
    finally:
        ws.close()
    return cfg


def measure(cfg: Path, record: bool) -> dict[str, Any]:
    from pypdf import PdfReader

    from sovra.config import load_config
    from sovra.governance.evidence import verify_bundle
    from sovra.governance.report import build_report, bundle_json, render_html, render_pdf
    from sovra.workspace import Workspace

    ws = Workspace.open(load_config(cfg))
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        bundle = build_report(ws, record=record)
        c1, t1 = time.process_time(), time.perf_counter()
        html = render_html(bundle)
        t2 = time.perf_counter()
        pdf = render_pdf(bundle)
        c3, t3 = time.process_time(), time.perf_counter()
        text = bundle_json(bundle)
        t4 = time.perf_counter()
        check = verify_bundle(json.loads(text), ws.audit.public_keys())
        t5 = time.perf_counter()
    finally:
        ws.close()
    pages = len(PdfReader(io.BytesIO(pdf)).pages)
    return {
        "log_entries": bundle["log"].get("checkpoint_size", bundle["log"]["size"]),
        "verified": bundle["verification"]["ok"],
        "figures": len(bundle["figures"]),
        "evidence_entries": len((bundle.get("evidence") or {}).get("entries", [])),
        "build_s": round(t1 - t0, 2),
        "html_s": round(t2 - t1, 2),
        "pdf_s": round(t3 - t2, 2),
        "json_s": round(t4 - t3, 2),
        "pdf_total_s": round(t1 - t0 + t3 - t2, 2),
        "build_cpu_s": round(c1 - c0, 2),
        "build_and_pdf_cpu_s": round(c3 - c0, 2),
        "verify_report_s": round(t5 - t4, 2),
        "verify_report_ok": check.ok,
        "pdf_pages": pages,
        "pdf_bytes": len(pdf),
        "html_bytes": len(html.encode()),
        "json_bytes": len(text.encode()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="measure this workspace instead")
    parser.add_argument("--asks", type=int, default=60)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--site", type=Path, help="build the site here and keep it")
    args = parser.parse_args()
    if args.config:
        site = "existing workspace " + str(args.config)
        result = measure(args.config, record=False)
    else:
        with tempfile.TemporaryDirectory(prefix="sovra-bench-report-") as tmp:
            t0 = time.perf_counter()
            cfg = build_site(Path(tmp), args.asks, args.runs)
            setup = round(time.perf_counter() - t0, 1)
            site = (
                f"demo site ({len(CLI_FILES)} files), {args.asks} asks + searches, {args.runs} runs"
            )
            result = {"setup_s": setup, **measure(cfg, record=True)}
    result = {
        "site": site,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
