"""Triage replies on tickets the classifiers never saw: how many get a cited draft, how many go
to a person with no draft, and (with hand judgements) how many drafts cite a relevant passage.

A seeded split of the helpdesk export (it_tickets.csv) keeps `--n` tickets out; the category
and urgency classifiers are trained on the rest (word/character TF-IDF, no embeddings, so the
benchmark fits in minutes). Each held-out ticket runs through the shipped `triage` workflow as
bob (it-support) on a copy of a synced demo home (`make demo` builds ./sovra-data); actions go
to a throwaway ticket store and a recording mailer, nothing is sent.

`--judgements FILE` (JSON: ticket row → {"relevant": bool, "why": str}) adds the share of the
sampled drafts a person judged to cite a relevant passage; bench/results/triage-judgements.json
holds the judgements made for the recorded run and says how they were made.

    python -m bench.bench_triage --help
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sqlite3
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "demo" / "sovra.toml"
TICKETS = ROOT.parent / "shared" / "data" / "company" / "tickets" / "it_tickets.csv"
RESULTS = ROOT / "bench" / "results"


class RecordingMailer:
    """Stands in for the e-mail adapter: keeps what would have been sent."""

    name = "email"
    changes = frozenset({"email.send"})

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def execute(self, params: Mapping[str, Any], *, idempotency_key: str) -> Any:
        from sovra.flows.base import ActionResult

        self.sent.append({"key": idempotency_key, **dict(params)})
        return ActionResult(self.name, idempotency_key, {"to": params.get("to")})


def split(path: Path, n: int, seed: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(held out, training rows): a seeded shuffle, the first `n` held out."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = [dict(r, row=str(i)) for i, r in enumerate(csv.DictReader(f), start=2)]
    random.Random(seed).shuffle(rows)
    return rows[:n], rows[n:]


def copy_home(config_path: Path, work: Path) -> Path:
    """A throwaway home holding a consistent copy of the synced index; returns its sovra.toml."""
    from sovra.config import load_config

    config = load_config(config_path)
    index = config.home / "index" / "index.sqlite"
    if not index.is_file():
        raise SystemExit(
            f"no synced index at {index}: run `make demo` first (or pass --config of a synced"
            " installation)"
        )
    home = work / "data"
    (home / "index").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    src = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    dst = sqlite3.connect(home / "index" / "index.sqlite")
    src.backup(dst)
    dst.close()
    src.close()
    text = config_path.read_text(encoding="utf-8")
    base = config_path.parent

    def absolute(m: re.Match[str]) -> str:
        return f'{m.group(1)}"{(base / m.group(2)).resolve()}"'

    text = re.sub(r'(?m)^(path\s*=\s*)"([^"]+)"', absolute, text)
    text = re.sub(r'(?m)^home\s*=\s*"[^"]*"', f'home = "{home}"', text)
    out = work / "sovra.toml"
    out.write_text(text, encoding="utf-8")
    from typer.testing import CliRunner

    from sovra.cli import app

    done = CliRunner().invoke(app, ["--config", str(out), "init", "--demo-directory"])
    if done.exit_code != 0:
        raise SystemExit(f"sovra init --demo-directory failed: {done.output}")
    return out


def train(rows: list[dict[str, str]], field: str) -> Any:
    from sovra.flows.classify import train_classifier

    return train_classifier([f"{r['title']}\n{r['body']}" for r in rows], [r[field] for r in rows])


def summarize(records: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one run's records (and of the hand judgements, when given)."""
    n = max(1, len(records))
    drafted = [r for r in records if r["draft"]]
    cited = [r for r in drafted if r["citations"]]
    no_draft = [r for r in records if not r["draft"]]
    sample = random.Random(args.seed).sample(drafted, min(args.sample, len(drafted)))
    figures: dict[str, Any] = {
        "tickets": len(records),
        "drafts": len(drafted),
        "drafts_with_citation": len(cited),
        "share_with_citation": round(len(cited) / n, 3),
        "no_draft_to_person": len(no_draft),
        "share_no_draft_to_person": round(len(no_draft) / n, 3),
        "drafts_sent_without_approval": sum(1 for r in drafted if r["status"] == "completed"),
        "sample_rows": [r["row"] for r in sample],
        "seconds_per_ticket": round(sum(r["took_s"] for r in records) / n, 2),
    }
    if args.judgements is not None:
        judged = json.loads(args.judgements.read_text(encoding="utf-8"))["judgements"]
        marks = [bool(judged[r["row"]]["relevant"]) for r in sample if r["row"] in judged]
        figures["judged"] = len(marks)
        figures["judged_relevant"] = sum(marks)
        if marks:
            figures["share_judged_relevant"] = round(sum(marks) / len(marks), 3)
            # The judged share applied to every draft, over all tickets.
            figures["est_share_tickets_with_relevant_draft"] = round(
                len(drafted) / n * sum(marks) / len(marks), 3
            )
    return figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sovra.config import load_config
    from sovra.flows.actions import TicketStore
    from sovra.workspace import Workspace

    held, training = split(args.tickets, args.n, args.seed)
    started = time.perf_counter()
    classifiers = {
        "ticket-category": train(training, "category"),
        "ticket-urgency": train(training, "urgency"),
    }
    trained_s = time.perf_counter() - started
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-triage-") as tmp:
        config = load_config(copy_home(args.config, Path(tmp)))
        mailer = RecordingMailer()
        store = TicketStore(Path(tmp) / "tickets.db")
        ws = Workspace.open(config)
        flows = ws.flows(adapters={"ticket_store": store, "email": mailer}, classifiers=classifiers)
        try:
            for i, row in enumerate(held, start=1):
                inputs = {
                    "title": " ".join(row["title"].split()),
                    "body": row["body"],
                    "impact": int(row["impact"]),
                    "requester_email": "requester@example.org",
                }
                t0 = time.perf_counter()
                result = flows.show(flows.start("triage", inputs, "bob").id)
                steps = {s["id"]: s for s in result["steps"]}
                draft = steps["draft"]["output"] or {}
                records.append(
                    {
                        "row": row["row"],
                        "title": row["title"],
                        "body": row["body"][:300],
                        "category": row["category"],
                        "summary": (steps["summary"]["output"] or {}).get("text", ""),
                        "status": result["status"],
                        "attention": result["attention"],
                        "category_shown": (steps["category"]["output"] or {}).get("display"),
                        "urgency_shown": (steps["urgency"]["output"] or {}).get("display"),
                        "draft": draft.get("text", ""),
                        "evidence": draft.get("evidence"),
                        "citations": [
                            {"title": c["title"], "uri": c["uri"], "quote": c["quote"][:300]}
                            for c in draft.get("citations", [])
                        ],
                        "passages": [
                            p["title"] for p in (steps["related"]["output"] or {})["passages"]
                        ],
                        "took_s": round(time.perf_counter() - t0, 2),
                    }
                )
                if not args.quiet:
                    print(
                        f"{i:3}/{len(held)} row {row['row']}: "
                        + ("draft" if draft.get("text") else "no draft"),
                        flush=True,
                    )
        finally:
            flows.close()
            ws.close()
            store.close()
    figures = summarize(records, args)
    figures["train_s"] = round(trained_s, 1)
    return {
        "benchmark": "triage",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": args.seed,
        "split": f"seeded shuffle of {args.tickets.name}; first {args.n} held out of training",
        "classifiers": "tfidf word 1-2 + char_wb 2-5 -> LogisticRegression (no embeddings)",
        "figures": figures,
        "tickets": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="a synced installation")
    parser.add_argument("--tickets", type=Path, default=TICKETS)
    parser.add_argument("--n", type=int, default=100, help="tickets held out and triaged")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--sample", type=int, default=20, help="drafts sampled for judging")
    parser.add_argument("--judgements", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--rescore",
        type=Path,
        default=None,
        help="recompute the figures of a results file (e.g. with --judgements) without rerunning",
    )
    args = parser.parse_args(argv)
    if args.rescore is not None:
        result = json.loads(args.rescore.read_text(encoding="utf-8"))
        train_s = result["figures"].get("train_s")
        result["figures"] = summarize(result["tickets"], args) | {"train_s": train_s}
    else:
        result = run(args)
    out = args.out or RESULTS / f"triage-{datetime.now(UTC):%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result["figures"], indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
