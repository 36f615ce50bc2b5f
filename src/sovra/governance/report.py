"""The compliance report: GDPR and AI Act records computed from the audit log, with evidence.

`build_report(ws, since, until)` verifies the whole audit log first. A log that fails
verification gives a report that says so and holds no figures. Otherwise every figure is
computed from the log's entries of the period (see `sovra.governance.evidence`), and the bundle
carries those entries with inclusion proofs against the signed checkpoint it names, so
`sovra audit verify-report` checks it offline. `render_html` and `render_pdf` render a bundle
(Jinja2 templates, matplotlib charts drawn as inline SVG, WeasyPrint for PDF; nothing is fetched
from the network).

Facts that are not in the log — the sources' labels, the endpoints' jurisdictions and legal
bases, the policy files, evaluation metrics from MLflow, the inventory — are shown as facts
with where they came from; only the figures carry leaf indexes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from sovra import __version__
from sovra.audit import AuditEvent
from sovra.errors import SovraError
from sovra.governance.evidence import (
    FORMAT,
    Figure,
    Record,
    b64,
    compute_figure,
    in_period,
    period_bounds,
)
from sovra.governance.inventory import build_inventory, tracked_runs

if TYPE_CHECKING:
    from sovra.audit import AuditLog
    from sovra.workspace import Workspace

TRACE_LEAVES = 12
"""Leaf indexes shown next to a figure; the rest are in the appendix and the JSON."""
APPENDIX_ENTRIES = 1000
"""Entries printed with their proofs in the HTML/PDF appendix; all of them are in the JSON."""
OVERSIGHT = (
    ("runs_started", "Workflow runs started", {"action": "flow.run", "outcome": "started"}),
    ("approval_requests", "Approvals requested", {"action": "flow.approval.request"}),
    ("approved", "Approved", {"action": "flow.approval.vote", "outcome": "approved"}),
    ("rejected", "Rejected", {"action": "flow.approval.vote", "outcome": "rejected"}),
    (
        "votes_refused",
        "Votes refused (own run or wrong group)",
        {"action": "flow.approval.vote", "decision": "deny"},
    ),
    ("escalated", "Approvals escalated", {"action": "flow.approval", "outcome": "escalated"}),
    ("expired", "Approvals expired", {"action": "flow.approval", "outcome": "expired"}),
    ("overrides", "Step outputs overridden", {"action": "flow.control", "outcome": "override"}),
    ("pauses", "Runs paused by an operator", {"action": "flow.control", "outcome": "pause"}),
    ("kill_on", "Kill switch set", {"action": "flow.kill_switch", "outcome": "on"}),
    ("kill_off", "Kill switch lifted", {"action": "flow.kill_switch", "outcome": "off"}),
)
DECIDING = {"action": ["flow.approval.request", "flow.approval.vote"]}


class _Figures:
    """Collects the report's figures, each computed from the period's records."""

    def __init__(self, records: Sequence[tuple[int, Record]]) -> None:
        self.records = records
        self.items: dict[str, Figure] = {}

    def add(self, fid: str, label: str, select: dict[str, Any], measure: str = "count") -> str:
        value, leaves = compute_figure(select, measure, self.records)
        self.items[fid] = Figure(fid, label, select, measure, value, leaves)
        return fid

    def value(self, fid: str) -> float | int:
        return self.items[fid].value


def _source_of(resource_id: str) -> str:
    return resource_id.partition(":")[0]


def _sources_in(record: Record) -> set[str]:
    res = record.get("resources")
    if not isinstance(res, list):
        return set()
    return {_source_of(str(r.get("id", ""))) for r in res if isinstance(r, Mapping)}


def _chunk_bytes(ws: Workspace, chunk_ids: Iterable[str]) -> dict[str, int]:
    """UTF-8 size of each chunk still in the index (what was sent is logged by hash only)."""
    by_doc: dict[str, set[str]] = defaultdict(set)
    for cid in chunk_ids:
        by_doc[cid.rpartition("#")[0]].add(cid)
    sizes: dict[str, int] = {}
    if not by_doc:
        return sizes  # nothing was sent: no need to open the index (and its model)
    try:
        index = ws.index
        for doc, wanted in by_doc.items():
            for chunk in index.chunks_of(doc):
                if chunk.id in wanted:
                    sizes[chunk.id] = len(chunk.text.encode("utf-8"))
    except Exception:
        return {}
    return sizes


def _policy_files(home: Path) -> list[dict[str, str]]:
    from sovra.policy.engine import default_policy_files

    folder = home / "policies"
    files = sorted(folder.glob("*.cedar")) if folder.is_dir() else []
    if files:
        named = [(p.name, p.read_text(encoding="utf-8")) for p in files]
        origin = str(folder)
    else:
        named, origin = default_policy_files(), "shipped defaults"
    return [
        {"name": n, "sha256": hashlib.sha256(t.encode()).hexdigest(), "origin": origin}
        for n, t in named
    ]


def _policy_version(home: Path) -> str:
    from sovra.policy.engine import PolicyEngine, PolicyError

    try:
        return PolicyEngine.for_home(home).version
    except PolicyError as exc:
        return f"invalid: {exc}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _log_section(log: AuditLog, report: Any) -> dict[str, Any]:
    return {
        "origin": log.origin,
        "size": log.size,
        "retention_days": log.retention_days,
        "public_key": log.public_key,
        "public_keys": log.public_keys(),
    }


def build_report(
    ws: Workspace,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    runs: Sequence[Any] | None = None,
    record: bool = True,
) -> dict[str, Any]:
    """The evidence bundle of a compliance report for [since, until) (default: everything)."""
    started = time.perf_counter()
    log = ws.audit
    verified = log.verify()
    since_t, until_t = period_bounds(since, until)
    bundle: dict[str, Any] = {
        "format": FORMAT,
        "title": "Compliance report",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sovra_version": __version__,
        "region": ws.config.workspace.region,
        "period": {
            "since": _iso(since),
            "until": _iso(until),
            "since_time": since_t,
            "until_time": until_t,
        },
        "log": _log_section(log, verified),
        "verification": {
            "ok": verified.ok,
            "problem": verified.problem,
            "size": verified.size,
            "checkpoints": verified.checkpoints,
            "bad_index": verified.bad_index,
            "root": verified.root.hex(),
        },
        "figures": [],
        "sections": {},
    }
    if not verified.ok:
        bundle["generation_seconds"] = round(time.perf_counter() - started, 3)
        return bundle
    note = log.checkpoint()
    size = int(note.split("\n")[1])
    bundle["log"]["checkpoint"] = note
    bundle["log"]["checkpoint_size"] = size
    bundle["log"]["checkpoint_root"] = note.split("\n")[2]
    stored: list[tuple[int, dict[str, Any], bytes]] = []
    for ev in log.events():
        if ev.index >= size:
            break
        try:
            parsed = json.loads(ev.entry)
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = {}
        stored.append((ev.index, parsed if isinstance(parsed, dict) else {}, ev.entry))
    period = [(i, r) for i, r, _ in stored if in_period(r, since_t, until_t)]
    figs = _Figures(period)
    runs, runs_problem = _runs(ws, runs)
    inventory = [s.to_dict() for s in build_inventory(ws, runs=runs or [])]
    sections = {
        **_processing(ws, figs),
        "policies": _policies(ws, figs),
        "oversight": _oversight(figs),
        "logging": _logging(figs, bundle["log"], bundle["verification"]),
        "accuracy": {**_accuracy(runs), "problem": runs_problem},
        "erasures": _erasures(log, figs),
        "inventory": {"systems": inventory, "gaps": sum(len(s["gaps"]) for s in inventory)},
    }
    bundle["sections"] = sections
    bundle["figures"] = [f.to_dict() for f in figs.items.values()]
    bundle["evidence"] = _evidence(log, stored, period, size, since_t)
    bundle["generation_seconds"] = round(time.perf_counter() - started, 3)
    if record:
        log.append(
            AuditEvent(
                actor="system:governance",
                action="governance.report",
                details={
                    "checkpoint_size": size,
                    "since": since_t,
                    "until": until_t or "",
                    "figures": len(bundle["figures"]),
                },
            )
        )
    return bundle


def _runs(ws: Workspace, runs: Sequence[Any] | None) -> tuple[list[Any] | None, str]:
    """The tracked runs (None: tracking not installed) and why they could not be read."""
    if runs is not None:
        return list(runs), ""
    try:
        return tracked_runs(ws.config), ""
    except SovraError as exc:  # a broken tracking store must not stop the report
        return [], exc.message


def _evidence(
    log: AuditLog,
    stored: Sequence[tuple[int, dict[str, Any], bytes]],
    period: Sequence[tuple[int, Record]],
    size: int,
    since: str,
) -> dict[str, Any]:
    """The entries from the period's first to its last, with proofs, and their neighbours."""
    if period:
        first, end = period[0][0], period[-1][0] + 1
    else:
        # An empty period: an empty range where it would start, between its two neighbours.
        first = end = next((i for i, r, _ in stored if str(r.get("time", "")) >= since), size)
    wanted = list(range(first, end))
    extra = ([first - 1] if first > 0 else []) + ([end] if end < size else [])
    receipts = {r.index: r for r in log.prove_many(wanted + extra, size)} if size else {}

    def item(index: int) -> dict[str, Any]:
        rec = receipts[index]
        assert rec.entry is not None
        return {"index": index, "entry": b64(rec.entry), "proof": [b64(h) for h in rec.proof]}

    return {
        "first": first,
        "end": end,
        "entries": [item(i) for i in wanted],
        "before": item(first - 1) if first > 0 else None,
        "after": item(end) if end < size else None,
    }


def _processing(ws: Workspace, figs: _Figures) -> dict[str, Any]:
    """GDPR Art. 30 records and the data-flow edges, from the sends and answers logged."""
    config = ws.config
    endpoints = {e.name: e for e in config.endpoints}
    sent: Counter[tuple[str, str]] = Counter()
    chunk_ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    extractive: Counter[str] = Counter()
    for _, rec in figs.records:
        if rec.get("action") == "send_to_endpoint" and rec.get("decision") == "allow":
            endpoint = str(rec.get("endpoint") or "")
            for res in rec.get("resources") or []:
                key = (_source_of(str(res.get("id", ""))), endpoint)
                sent[key] += 1
                chunk_ids[key].add(str(res.get("id", "")))
        elif rec.get("action") == "ask":
            details = rec.get("details") or {}
            if details.get("generation") == "extractive":
                for src in _sources_in(rec):
                    extractive[src] += 1
    sizes = _chunk_bytes(ws, {c for ids in chunk_ids.values() for c in ids})
    edges = []
    for (src, ep), _ in sorted(sent.items()):
        cfg = endpoints.get(ep)
        select = {"action": "send_to_endpoint", "decision": "allow", "endpoint": ep, "source": src}
        known = [sizes[c] for c in chunk_ids[(src, ep)] if c in sizes]
        edges.append(
            {
                "source": src,
                "endpoint": ep,
                "jurisdiction": cfg.jurisdiction if cfg else rec_jurisdiction(figs, ep),
                "hosting": cfg.hosting if cfg else None,
                "legal_basis": (cfg.legal_basis or None) if cfg else None,
                "sends": figs.add(f"flow.{src}.{ep}.sends", f"Sends of {src} to {ep}", select),
                "chunks": figs.add(
                    f"flow.{src}.{ep}.chunks",
                    f"Passages of {src} sent to {ep}",
                    select,
                    f"resources_of:{src}",
                ),
                "pii": figs.add(
                    f"flow.{src}.{ep}.pii",
                    f"Sends of {src} to {ep} with personal data detected",
                    {**select, "details.contains_pii": True},
                ),
                "distinct_passages": len(chunk_ids[(src, ep)]),
                "bytes": sum(known) if known else None,
                "bytes_complete": len(known) == len(chunk_ids[(src, ep)]),
            }
        )
    local = [
        {
            "source": src,
            "answers": figs.add(
                f"flow.{src}.extractive",
                f"Extractive answers citing {src} (processed in sovra, no model)",
                {"action": "ask", "generation": "extractive", "source": src},
            ),
        }
        for src in sorted(extractive)
    ]
    tokens = []
    for ep in sorted(
        {e for _, e in sent}
        | {
            str(r.get("endpoint"))
            for _, r in figs.records
            if r.get("action") == "ask"
            and (r.get("details") or {}).get("generation") == "generative"
        }
    ):
        select = {"action": "ask", "endpoint": ep, "generation": "generative"}
        tokens.append(
            {
                "endpoint": ep,
                "answers": figs.add(f"tokens.{ep}.answers", f"Generated answers by {ep}", select),
                "tokens_in": figs.add(
                    f"tokens.{ep}.in", f"Tokens sent to {ep}", select, "sum:details.tokens_in"
                ),
                "tokens_out": figs.add(
                    f"tokens.{ep}.out",
                    f"Tokens received from {ep}",
                    select,
                    "sum:details.tokens_out",
                ),
            }
        )
    records = []
    for source in config.sources:
        rule_labels = sorted({r.classification for r in source.rules if r.classification})
        categories = sorted(
            {
                cat
                for pattern, cat in config.routing.categories.items()
                if pattern.startswith(f"{source.name}:") or pattern == source.name
            }
        )
        records.append(
            {
                "source": source.name,
                "kind": source.kind,
                "classification": source.classification,
                "rule_classifications": rule_labels,
                "residency": source.residency,
                "access": list(source.access),
                "categories": categories,
                "endpoints": [e for e in edges if e["source"] == source.name],
                "extractive": next((x for x in local if x["source"] == source.name), None),
            }
        )
    return {
        "processing": {"records": records},
        "dataflow": {"edges": edges, "local": local, "tokens": tokens},
    }


def rec_jurisdiction(figs: _Figures, endpoint: str) -> str | None:
    """The jurisdiction an endpoint no longer configured was logged with."""
    for _, rec in figs.records:
        if rec.get("endpoint") == endpoint and rec.get("jurisdiction"):
            return str(rec["jurisdiction"])
    return None


def _policies(ws: Workspace, figs: _Figures) -> dict[str, Any]:
    versions: dict[str, list[str]] = {}
    rules: set[str] = set()
    other: set[tuple[str, str]] = set()
    for _, rec in figs.records:
        version = (rec.get("details") or {}).get("policy_version")
        if isinstance(version, str):
            versions.setdefault(version, []).append(str(rec.get("time", "")))
        if rec.get("decision") == "deny":
            ids = rec.get("policy_ids") or []
            rules.update(str(p) for p in ids)
            if not ids:
                other.add((str(rec.get("action")), str(rec.get("outcome"))))
    history = [
        {
            "version": v,
            "first_seen": min(times),
            "last_seen": max(times),
            "decisions": figs.add(
                f"policy.version.{v}",
                f"Decisions under policy set {v}",
                {"details.policy_version": v},
            ),
        }
        for v, times in sorted(versions.items(), key=lambda kv: min(kv[1]))
    ]
    denials = [
        {
            "rule": rule,
            "figure": figs.add(
                f"denials.rule.{rule}",
                f"Requests denied by rule {rule}",
                {"decision": "deny", "policy_id": rule},
            ),
        }
        for rule in sorted(rules)
    ]
    unruled = [
        {
            "action": action,
            "outcome": outcome,
            "figure": figs.add(
                f"denials.{action}.{outcome}",
                f"{action} denied ({outcome})",
                {"decision": "deny", "action": action, "outcome": outcome, "no_policy_ids": True},
            ),
        }
        for action, outcome in sorted(other)
    ]
    return {
        "version": _policy_version(ws.home),
        "files": _policy_files(ws.home),
        "history": history,
        "denials": denials,
        "other_denials": unruled,
        "denied_total": figs.add("denials.total", "Requests denied", {"decision": "deny"}),
        "refusals": figs.add(
            "refusals.routing",
            "Model calls refused by routing",
            {"action": "send_to_endpoint", "decision": "deny"},
        ),
    }


def _oversight(figs: _Figures) -> dict[str, Any]:
    rows = [
        {"label": label, "figure": figs.add(f"oversight.{fid}", label, select)}
        for fid, label, select in OVERSIGHT
    ]
    return {
        "rows": rows,
        "decided": figs.add("oversight.decided", "Approvals decided", DECIDING, "decisions"),
        "median": figs.add(
            "oversight.decision_median",
            "Median time to decision (seconds)",
            DECIDING,
            "decision_seconds_median",
        ),
        "max": figs.add(
            "oversight.decision_max",
            "Longest time to decision (seconds)",
            DECIDING,
            "decision_seconds_max",
        ),
    }


def _logging(
    figs: _Figures, log: Mapping[str, Any], verification: Mapping[str, Any]
) -> dict[str, Any]:
    actions = sorted({str(r.get("action")) for _, r in figs.records})
    return {
        "entries": figs.add("logging.entries", "Audit entries in the period", {}),
        "by_action": [
            {
                "action": a,
                "figure": figs.add(
                    f"logging.action.{a}", f"Entries with action {a}", {"action": a}
                ),
            }
            for a in actions
        ],
        "total": log.get("checkpoint_size"),
        "retention_days": log.get("retention_days"),
        "verified_entries": verification.get("size"),
        "checkpoints": verification.get("checkpoints"),
    }


def _accuracy(runs: Sequence[Any] | None) -> dict[str, Any]:
    if runs is None:
        return {"available": False, "latest": [], "trend": {}}
    trend: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        started = (
            run.started_at.isoformat()
            if hasattr(run.started_at, "isoformat")
            else str(run.started_at)
        )
        trend[str(run.suite)].append(
            {
                "run_id": str(run.run_id),
                "started_at": started,
                "metrics": {
                    str(k): float(v)
                    for k, v in dict(run.metrics).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                },
            }
        )
    for suite in trend:
        trend[suite].sort(key=lambda r: str(r["started_at"]))
    latest = [{"suite": s, **rows[-1]} for s, rows in sorted(trend.items())]
    return {"available": True, "latest": latest, "trend": dict(sorted(trend.items()))}


def _erasures(log: AuditLog, figs: _Figures) -> dict[str, Any]:
    rows = []
    for index, rec in figs.records:
        if rec.get("action") != "erase":
            continue
        pseudonym = str((rec.get("details") or {}).get("subject", ""))
        rows.append(
            {
                "index": index,
                "time": rec.get("time"),
                "subject": pseudonym,
                "method": (rec.get("details") or {}).get("method"),
                # Verified now: the subject's key is gone, so its sealed fields cannot be read.
                "key_destroyed": log.subjects.key_for(pseudonym) is None,
            }
        )
    return {
        "figure": figs.add("erasures.total", "Erasures executed", {"action": "erase"}),
        "rows": rows,
        "verified": all(r["key_destroyed"] for r in rows),
    }


# -- rendering -----------------------------------------------------------------------------


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("sovra.governance", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    return env


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


_SVG_HEAD = re.compile(r"^.*?(?=<svg)", re.S)
_SVG_STYLE = re.compile(r"<style.*?</style>", re.S)
_SVG_STYLE_ATTR = re.compile(r'\sstyle="([^"]*)"')


def _presentation_attributes(match: re.Match[str]) -> str:
    """`style="fill: #fff; stroke-width: 0.8"` as SVG presentation attributes
    (`fill="#fff" stroke-width="0.8"`): same rendering, and a CSP without 'unsafe-inline'
    blocks style attributes but not these."""
    pairs = []
    for declaration in match.group(1).split(";"):
        name, sep, value = declaration.partition(":")
        if sep and re.fullmatch(r"[a-z-]+", name.strip()):
            pairs.append(f'{name.strip()}="{value.strip()}"')
    return (" " + " ".join(pairs)) if pairs else ""


def _svg(fig: Any, label: str) -> Markup:
    """A matplotlib figure as inline SVG (text drawn as paths: no font is needed to show it),
    without its <style> block or style attributes, which a strict Content-Security-Policy
    would refuse."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = _SVG_STYLE.sub("", _SVG_HEAD.sub("", buf.getvalue(), count=1))
    text = _SVG_STYLE_ATTR.sub(_presentation_attributes, text)
    text = text.replace("<svg ", f'<svg role="img" aria-label="{Markup.escape(label)}" ', 1)
    return Markup(text)


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure as MplFigure

    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "sovra"}):
        return MplFigure(figsize=(width, height), dpi=100)


def _charts(bundle: Mapping[str, Any]) -> dict[str, Markup]:
    import matplotlib

    values = {f["id"]: f["value"] for f in bundle.get("figures", [])}
    sections = bundle.get("sections", {})
    charts: dict[str, Markup] = {}
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "sovra", "font.size": 9}):
        flow = sections.get("dataflow", {})
        if flow.get("edges") or flow.get("local"):
            charts["dataflow"] = _svg(_dataflow_chart(flow, values), "Data-flow map")
        denials = sections.get("policies", {}).get("denials", [])
        if denials:
            charts["denials"] = _svg(
                _bars([(d["rule"], values[d["figure"]]) for d in denials], "requests denied"),
                "Denials by rule",
            )
        rows = sections.get("oversight", {}).get("rows", [])
        if any(values.get(r["figure"]) for r in rows):
            charts["oversight"] = _svg(
                _bars([(r["label"], values[r["figure"]]) for r in rows], "events"),
                "Human oversight events",
            )
        trend = sections.get("accuracy", {}).get("trend", {})
        if trend:
            charts["accuracy"] = _svg(_trend_chart(trend), "Evaluation metrics over runs")
    return charts


def _dataflow_chart(flow: Mapping[str, Any], values: Mapping[str, Any]) -> Any:
    edges = [
        (
            e["source"],
            f"{e['endpoint']}\n{e['jurisdiction'] or '?'} · {e['hosting'] or '?'}",
            values[e["sends"]],
            values[e["chunks"]],
            e.get("bytes"),
        )
        for e in flow.get("edges", [])
    ]
    edges += [
        (x["source"], "in sovra (extractive)\nlocal", values[x["answers"]], None, None)
        for x in flow.get("local", [])
    ]
    sources = sorted({e[0] for e in edges})
    targets = sorted({e[1] for e in edges}, key=lambda t: (t.split("\n")[1], t))
    height = max(2.0, 0.7 * max(len(sources), len(targets)) + 0.8)
    fig = _figure(7.5, height)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ys = {s: 1 - (i + 0.5) / len(sources) for i, s in enumerate(sources)}
    yt = {t: 1 - (i + 0.5) / len(targets) for i, t in enumerate(targets)}
    top = max(e[2] for e in edges) or 1
    for src, tgt, sends, chunks, size in edges:
        ax.plot(
            [0.22, 0.72], [ys[src], yt[tgt]], color="#2b6cb0", alpha=0.6, lw=1 + 5 * sends / top
        )
        label = f"{sends:,} sends" if chunks is not None else f"{sends:,} answers"
        if chunks is not None:
            label += f" · {chunks:,} passages"
        if size:
            label += f" · {size / 1024:,.1f} KiB"
        ax.text(
            0.47, (ys[src] + yt[tgt]) / 2 + 0.02, label, ha="center", fontsize=7, color="#1a365d"
        )
    for s, y in ys.items():
        ax.text(0.2, y, s, ha="right", va="center", fontsize=9, weight="bold")
    for t, y in yt.items():
        ax.text(0.74, y, t, ha="left", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Sources → endpoints (by jurisdiction)", fontsize=10)
    return fig


def _bars(items: Sequence[tuple[str, float | int]], unit: str) -> Any:
    fig = _figure(7.0, max(1.6, 0.32 * len(items) + 0.7))
    ax = fig.add_subplot()
    labels = [label for label, _ in items][::-1]
    counts = [value for _, value in items][::-1]
    ax.barh(labels, counts, color="#2b6cb0")
    for i, v in enumerate(counts):
        ax.text(v, i, f" {v:,}", va="center", fontsize=8)
    ax.set_xlabel(unit)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _trend_chart(trend: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any:
    suites = list(trend)[:6]
    fig = _figure(7.0, 2.2 * len(suites))
    for n, suite in enumerate(suites, start=1):
        ax = fig.add_subplot(len(suites), 1, n)
        runs = trend[suite]
        names = sorted({m for r in runs for m in r["metrics"]})[:6]
        for name in names:
            xs = [i for i, r in enumerate(runs) if name in r["metrics"]]
            ax.plot(xs, [runs[i]["metrics"][name] for i in xs], marker="o", label=name)
        ax.set_title(suite, fontsize=9)
        ax.set_xticks(range(len(runs)), [str(r["started_at"])[:10] for r in runs], fontsize=7)
        if names:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _context(bundle: Mapping[str, Any]) -> dict[str, Any]:
    figures = {f["id"]: f for f in bundle.get("figures", [])}
    entries = []
    evidence = bundle.get("evidence") or {}
    items = evidence.get("entries", [])
    for item in items[:APPENDIX_ENTRIES]:
        try:
            import base64

            record = json.loads(base64.b64decode(item["entry"]))
        except (ValueError, KeyError, TypeError):
            record = {}
        entries.append({"index": item["index"], "record": record, "proof": item.get("proof", [])})
    return {
        "b": bundle,
        "s": bundle.get("sections", {}),
        "figures": figures,
        "charts": _charts(bundle) if bundle.get("verification", {}).get("ok") else {},
        "entries": entries,
        "omitted": max(0, len(items) - APPENDIX_ENTRIES),
        "trace": TRACE_LEAVES,
    }


def render_html(bundle: Mapping[str, Any], *, standalone: bool = True, link_base: str = "") -> str:
    """The report as HTML: a whole page (`standalone`, styles inline, for files and PDF) or the
    sections alone (for the governance page, whose CSP keeps styles in a stylesheet)."""
    env = _env()
    body = env.get_template("_sections.html").render(**_context(bundle), link_base=link_base)
    if not standalone:
        return body
    return env.get_template("report.html").render(b=bundle, body=Markup(body))


def _no_fetch(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    from weasyprint.urls import default_url_fetcher

    if not url.startswith("data:"):
        raise ValueError(f"the report fetches nothing from outside ({url})")
    result: dict[str, Any] = default_url_fetcher(url, *args, **kwargs)
    return result


def render_pdf(bundle: Mapping[str, Any]) -> bytes:
    """The report as PDF (WeasyPrint); fetches nothing outside the document."""
    from weasyprint import HTML

    pdf = HTML(string=render_html(bundle), url_fetcher=_no_fetch).write_pdf()
    assert pdf is not None
    return bytes(pdf)


def bundle_json(bundle: Mapping[str, Any]) -> str:
    return json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"
