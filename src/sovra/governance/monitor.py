"""Monitoring: drift and quality figures over a reference and a current window, with alerts.

Everything comes from what sovra already logs — no query text is read:

- query drift from the query-vector log (`Workspace.query_log`: embeddings only, no text or
  user) — PSI on topic clusters and a classifier two-sample test (`sovra.governance.drift`);
- from the audit log: the not-found rate of answers (`ask` outcome `not_found`), citation-check
  failures (an answer flagged `unsupported_citation`, `citation_out_of_range` or
  `no_citations`), refusals by the router (`send_to_endpoint` denied) by policy rule,
  negative feedback (`feedback` rated `down`), and approval times (`flow.approval.request` →
  the deciding `flow.approval.vote`);
- from the usage ledger: latency and cost per endpoint.

`check` computes a `MonitorState`; each figure over its `[govern]` threshold is an `Alert`.
When alerts fire, one `monitor.alert` audit event records them, the state is kept in
`<data dir>/monitor/state.json` (owner-only; the governance page shows its banner) and, when
`[govern] alert_webhook` is set, they are POSTed there through the egress guard.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from sovra.config import Config
from sovra.storage import atomic_write
from sovra.workspace import Workspace

CITATION_FLAGS = frozenset({"unsupported_citation", "citation_out_of_range", "no_citations"})
STATE_FILE = Path("monitor") / "state.json"


@dataclass(frozen=True)
class Alert:
    """One figure over its threshold in `window` (e.g. `current` or `reference→current`)."""

    metric: str
    value: float
    threshold: float
    window: str
    message: str


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC"


@dataclass
class MonitorState:
    """The figures of one check. `values` holds every current-window figure by metric name
    (per-endpoint ones as `latency_ms_avg[endpoint]`, per-rule ones as `refusals[rule]`);
    `reference_values` the same figures over the reference window where they apply; `notes`
    say what could not be computed and why."""

    checked_at: datetime
    reference: Window
    current: Window
    values: dict[str, float] = field(default_factory=dict)
    reference_values: dict[str, float] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    audit_index: int | None = None
    webhook: str | None = None

    @property
    def ok(self) -> bool:
        return not self.alerts

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat(),
            "reference": {
                "start": self.reference.start.isoformat(),
                "end": self.reference.end.isoformat(),
            },
            "current": {
                "start": self.current.start.isoformat(),
                "end": self.current.end.isoformat(),
            },
            "values": self.values,
            "reference_values": self.reference_values,
            "alerts": [asdict(a) for a in self.alerts],
            "notes": self.notes,
            "audit_index": self.audit_index,
            "webhook": self.webhook,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MonitorState:
        def window(d: dict[str, str]) -> Window:
            return Window(datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"]))

        return cls(
            checked_at=datetime.fromisoformat(data["checked_at"]),
            reference=window(data["reference"]),
            current=window(data["current"]),
            values={k: float(v) for k, v in data.get("values", {}).items()},
            reference_values={k: float(v) for k, v in data.get("reference_values", {}).items()},
            alerts=[Alert(**a) for a in data.get("alerts", [])],
            notes=list(data.get("notes", [])),
            audit_index=data.get("audit_index"),
            webhook=data.get("webhook"),
        )


def windows(config: Config, now: datetime) -> tuple[Window, Window]:
    """(reference, current): the last `current_days`, and the `reference_days` before them."""
    g = config.govern
    now = now.astimezone(UTC)
    split = now - timedelta(days=g.current_days)
    return Window(split - timedelta(days=g.reference_days), split), Window(split, now)


@dataclass
class _Counts:
    asks: int = 0
    not_found: int = 0
    answered: int = 0
    citation_failures: int = 0
    decisions: int = 0
    refusals: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    feedback: int = 0
    negative: int = 0
    approval_hours: list[float] = field(default_factory=list)

    def rates(self) -> dict[str, float]:
        out: dict[str, float] = {
            "asks": self.asks,
            "not_found_rate": _rate(self.not_found, self.asks),
            "citation_failure_rate": _rate(self.citation_failures, self.answered),
            "refusal_rate": _rate(self.refusals, self.decisions),
            "negative_feedback_rate": _rate(self.negative, self.feedback),
            "approvals_decided": len(self.approval_hours),
        }
        if self.approval_hours:
            out["approval_hours_p95"] = float(np.percentile(self.approval_hours, 95))
            out["approval_hours_median"] = float(np.median(self.approval_hours))
        for rule, n in sorted(self.by_rule.items()):
            out[f"refusals[{rule}]"] = n
        return out


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _audit_counts(ws: Workspace, reference: Window, current: Window) -> tuple[_Counts, _Counts]:
    """Both windows' counts, from one pass over the audit log since the reference start."""
    counts = {"reference": _Counts(), "current": _Counts()}
    requested: dict[tuple[str, str], datetime] = {}
    for ev in ws.audit.events(since=reference.start):
        view = ev.view
        when = _parse_time(str(view["time"]))
        if when >= current.end:
            break
        c = counts["current" if when >= current.start else "reference"]
        action, outcome = view.get("action"), view.get("outcome")
        details = view.get("details") or {}
        if action == "ask":
            c.asks += 1
            if outcome == "not_found":
                c.not_found += 1
            elif outcome == "answered":
                c.answered += 1
                if CITATION_FLAGS & set(details.get("flags") or ()):
                    c.citation_failures += 1
        elif action == "send_to_endpoint":
            c.decisions += 1
            if view.get("decision") == "deny":
                c.refusals += 1
                c.by_rule.update(view.get("policy_ids") or ["(no rule named)"])
        elif action == "feedback":
            c.feedback += 1
            if details.get("rating") == "down":
                c.negative += 1
        elif action == "flow.approval.request":
            requested[(str(details.get("run_id")), str(details.get("step_id")))] = when
        elif action == "flow.approval.vote" and outcome in ("approved", "rejected"):
            asked = requested.pop((str(details.get("run_id")), str(details.get("step_id"))), None)
            if asked is not None:
                c.approval_hours.append((when - asked).total_seconds() / 3600)
    return counts["reference"], counts["current"]


def _usage(ws: Workspace, config: Config, current: Window) -> dict[str, float]:
    days = config.govern.current_days
    out: dict[str, float] = {}
    for row in ws.usage_ledger.report("endpoint", since=current.start):
        out[f"calls[{row.key}]"] = row.calls
        out[f"latency_ms_avg[{row.key}]"] = float(row.latency_ms_avg or 0.0)
        out[f"cost_per_day[{row.key}]"] = float(row.cost or 0.0) / days
    return out


def _drift(ws: Workspace, config: Config, state: MonitorState, seed: int) -> None:
    from sovra.governance.drift import detect_drift

    g = config.govern
    model = ws.monitored_model
    ref = ws.query_log.vectors(state.reference.start, state.reference.end, model=model)
    cur = ws.query_log.vectors(state.current.start, state.current.end, model=model)
    state.values["queries"] = len(cur)
    state.reference_values["queries"] = len(ref)
    if len(ref) < g.min_queries or len(cur) < g.min_queries:
        state.notes.append(
            f"drift not computed: {len(ref)} reference and {len(cur)} current queries"
            f" (needs {g.min_queries} in each; [govern] min_queries)"
        )
        return
    if ref.shape[1] != cur.shape[1]:
        state.notes.append("drift not computed: the windows' embeddings differ in dimension")
        return
    result = detect_drift(
        ref, cur, clusters=g.drift_clusters, permutations=g.drift_permutations, seed=seed
    )
    state.values["drift.psi"] = result.psi
    state.values["drift.c2st_auc"] = result.auc
    state.values["drift.c2st_p_value"] = result.p_value


def _alerts(config: Config, state: MonitorState) -> list[Alert]:
    g = config.govern
    cur = f"current ({state.current})"
    v = state.values
    found: list[Alert] = []

    def over(metric: str, threshold: float | None, what: str, window: str = cur) -> None:
        value = v.get(metric)
        if threshold is not None and value is not None and value > threshold:
            found.append(
                Alert(metric, value, threshold, window, f"{what}: {value:.3g} > {threshold:.3g}")
            )

    drift_window = f"reference ({state.reference}) → {cur}"
    over("drift.psi", g.drift_psi, "query topics shifted (PSI)", drift_window)
    p = v.get("drift.c2st_p_value")
    if p is not None and p < g.drift_p_value:
        found.append(
            Alert(
                "drift.c2st_p_value",
                p,
                g.drift_p_value,
                drift_window,
                f"queries tell apart from the reference window (AUC {v['drift.c2st_auc']:.2f},"
                f" p = {p:.3g} < {g.drift_p_value:.3g})",
            )
        )
    if v.get("asks", 0) > 0:
        over("not_found_rate", g.max_not_found_rate, "answers not found")
        over("citation_failure_rate", g.max_citation_failure_rate, "citation checks failed")
    over("refusal_rate", g.max_refusal_rate, "requests refused by policy")
    over("negative_feedback_rate", g.max_negative_feedback_rate, "negative feedback")
    over("approval_hours_p95", g.max_approval_hours_p95, "approval time p95 (hours)")
    for metric in sorted(v):
        if metric.startswith("latency_ms_avg["):
            over(metric, g.max_latency_ms_avg, f"mean latency of {metric[15:-1]} (ms)")
        elif metric.startswith("cost_per_day["):
            over(metric, g.max_cost_per_day, f"cost per day of {metric[13:-1]}")
    return found


def check(
    workspace: Workspace,
    config: Config,
    now: datetime | None = None,
    *,
    record: bool = True,
    seed: int = 0,
) -> MonitorState:
    """Compute the figures and alerts. With `record` (the default, what `sovra monitor check`
    does): log alerts to the audit log, keep the state for the governance page, and POST them
    to `[govern] alert_webhook` when set."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    reference, current = windows(config, now)
    state = MonitorState(checked_at=now, reference=reference, current=current)
    ref_counts, cur_counts = _audit_counts(workspace, reference, current)
    state.values.update(cur_counts.rates())
    state.reference_values.update(ref_counts.rates())
    state.values.update(_usage(workspace, config, current))
    _drift(workspace, config, state, seed)
    state.alerts = _alerts(config, state)
    if record:
        _record(workspace, config, state)
    return state


def _record(ws: Workspace, config: Config, state: MonitorState) -> None:
    if state.alerts:
        from sovra.audit import AuditEvent

        event = AuditEvent(
            actor="system:monitor",
            action="monitor.alert",
            outcome="alerts",
            details={
                "alerts": [
                    {
                        "metric": a.metric,
                        "value": a.value,
                        "threshold": a.threshold,
                        "window": a.window,
                    }
                    for a in state.alerts
                ]
            },
        )
        state.audit_index = ws.audit.append(event).index
        if config.govern.alert_webhook:
            state.webhook = _post_webhook(config, state)
    atomic_write(
        ws.home / STATE_FILE, json.dumps(state.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )


def _post_webhook(config: Config, state: MonitorState) -> str:
    """POST the alerts through the egress guard; the outcome as text (never raises: a down
    webhook must not hide the alerts the check found)."""
    import httpx

    from sovra.egress import EgressDenied, EgressGuard, guarded_client

    url = config.govern.alert_webhook
    guard = EgressGuard((), airgap=config.egress.airgap, extra_hosts=config.flows.webhook_hosts)
    body = {
        "source": "sovra monitor",
        "checked_at": state.checked_at.isoformat(),
        "alerts": [asdict(a) for a in state.alerts],
        "audit_index": state.audit_index,
    }
    try:
        with guarded_client(guard, timeout=10.0) as client:
            response = client.post(url, json=body)
    except EgressDenied as exc:
        return f"refused: {exc.message}"
    except httpx.HTTPError as exc:
        return f"failed: {type(exc).__name__}"
    return f"HTTP {response.status_code}"


def latest_state(workspace: Workspace) -> MonitorState | None:
    """The state the last recorded check left (for the governance page), or None."""
    path = workspace.home / STATE_FILE
    if not path.is_file():
        return None
    return MonitorState.from_dict(json.loads(path.read_text(encoding="utf-8")))
