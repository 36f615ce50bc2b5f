"""`sovra.governance.monitor`: figures from known audit events, thresholds → alerts, recording."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sovra.audit import AuditEvent
from sovra.config import ConfigError, parse_config
from sovra.domain import QueryOptions
from sovra.governance.monitor import check, latest_state
from sovra.models.embedding import FusedEmbedder
from sovra.workspace import Workspace
from tests.support.ingest import FakeEmbedder

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def workspace(tmp_path: Path, **govern: object) -> Workspace:
    cfg = parse_config({"workspace": {"home": str(tmp_path / "home")}, "govern": govern}, tmp_path)
    return Workspace.open(cfg)


def ev(action: str, when: datetime, **fields: object) -> AuditEvent:
    return AuditEvent(actor="user:ann", action=action, time=when, **fields)  # type: ignore[arg-type]


def test_rates_come_from_the_audit_events_of_each_window(tmp_path: Path) -> None:
    ws = workspace(tmp_path, max_not_found_rate=0.5, max_refusal_rate=0.4)
    cur, ref = NOW - timedelta(days=1), NOW - timedelta(days=10)
    events = [
        # current window: 3 asks, 2 not found, 1 answered with a failed citation check
        ev("ask", cur, outcome="not_found"),
        ev("ask", cur, outcome="not_found"),
        ev("ask", cur, outcome="answered", details={"flags": ["unsupported_citation"]}),
        ev(
            "send_to_endpoint",
            cur,
            decision="deny",
            outcome="refused",
            policy_ids=("confidential-not-foreign",),
        ),
        ev("send_to_endpoint", cur, decision="allow", outcome="routed"),
        ev("feedback", cur, details={"rating": "down"}),
        ev("feedback", cur, details={"rating": "up"}),
        ev(
            "flow.approval.request",
            cur - timedelta(hours=5),
            details={"run_id": "r1", "step_id": "s"},
        ),
        ev("flow.approval.vote", cur, outcome="approved", details={"run_id": "r1", "step_id": "s"}),
        # reference window: one answered ask
        ev("ask", ref, outcome="answered", details={"flags": []}),
        # after `now`: not counted
        ev("ask", NOW + timedelta(hours=1), outcome="not_found"),
    ]
    for e in sorted(events, key=lambda e: e.time):
        ws.audit.append(e)
    st = check(ws, ws.config, NOW, record=False)
    v = st.values
    assert v["asks"] == 3
    assert v["not_found_rate"] == pytest.approx(2 / 3)
    assert v["citation_failure_rate"] == 1.0
    assert v["refusal_rate"] == 0.5
    assert v["refusals[confidential-not-foreign]"] == 1
    assert v["negative_feedback_rate"] == 0.5
    assert v["approval_hours_p95"] == pytest.approx(5.0)
    assert st.reference_values["asks"] == 1
    assert st.reference_values["not_found_rate"] == 0.0
    fired = {a.metric for a in st.alerts}
    assert {
        "not_found_rate",
        "refusal_rate",
        "citation_failure_rate",
        "negative_feedback_rate",
    } <= fired
    assert "approval_hours_p95" not in fired  # 5 h < 24 h
    assert any("drift not computed" in n for n in st.notes)
    ws.close()


def test_quiet_log_raises_nothing_and_records_no_alert(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    ws.audit.append(ev("ask", NOW - timedelta(hours=2), outcome="answered", details={"flags": []}))
    size = ws.audit.size
    st = check(ws, ws.config, NOW)
    assert st.alerts == [] and st.audit_index is None
    assert ws.audit.size == size
    ws.close()


def test_alerts_are_audited_and_kept_for_the_governance_page(tmp_path: Path) -> None:
    ws = workspace(tmp_path, max_not_found_rate=0.1)
    ws.audit.append(ev("ask", NOW - timedelta(hours=2), outcome="not_found"))
    st = check(ws, ws.config, NOW)
    assert [a.metric for a in st.alerts] == ["not_found_rate"]
    assert st.audit_index is not None
    logged = next(ws.audit.events(start=st.audit_index))
    assert logged.view["action"] == "monitor.alert"
    assert logged.view["details"]["alerts"][0]["metric"] == "not_found_rate"
    path = ws.home / "monitor" / "state.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = latest_state(ws)
    assert kept is not None and kept.alerts == st.alerts
    assert json.loads(path.read_text())["alerts"][0]["value"] == 1.0
    ws.close()


def test_drift_alert_from_the_query_vector_log(tmp_path: Path) -> None:
    """The monitor reads the log the workspace writes; a topic shift between windows fires."""
    ws = workspace(tmp_path, min_queries=30, drift_permutations=100)
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((4, 16))
    model = ws.config.embedding.name
    for i in range(120):  # reference: all four topics
        vec = centers[i % 4] + 0.3 * rng.standard_normal(16)
        ws.query_log.add("search", model, vec, time=NOW - timedelta(days=10, minutes=i))
    for i in range(60):  # current: one topic only
        vec = centers[0] + 0.3 * rng.standard_normal(16)
        ws.query_log.add("ask", model, vec, time=NOW - timedelta(days=1, minutes=i))
    st = check(ws, ws.config, NOW, record=False)
    assert st.values["queries"] == 60 and st.reference_values["queries"] == 120
    fired = {a.metric for a in st.alerts}
    assert {"drift.psi", "drift.c2st_p_value"} <= fired
    assert stat.S_IMODE((ws.home / "monitor" / "queries.sqlite").stat().st_mode) == 0o600
    ws.close()


def test_query_vector_log_keeps_no_text_and_prunes_old_rows(tmp_path: Path) -> None:
    ws = workspace(tmp_path, reference_days=2, current_days=1)
    ws._embedder = FakeEmbedder()  # type: ignore[assignment]  # no model load for this
    ws.directory.add_user("ann", ["staff"])
    ann = ws.principal("ann")
    ws.search(ann, "quarterly zebra migration budget")
    list(ws.ask(ann, "where do the zebras migrate"))
    ws.search(ann, "not for the monitor", monitored=False)
    log = ws.query_log
    assert log.count() == 2
    log.add("search", "m", np.ones(4), time=NOW - timedelta(days=5))
    log.add("search", "m", np.ones(4), time=NOW)
    # The write at NOW prunes what is older than reference + current (3 days) before it: the
    # 5-day-old row; the two questions (logged at the real time, later than NOW) stay.
    assert log.count() == 3
    ws.close()
    stored = b"".join(p.read_bytes() for p in (ws.home / "monitor").glob("queries.sqlite*"))
    assert b"zebra" not in stored and b"monitor" not in stored and b"ann" not in stored


class NamedFake(FakeEmbedder):
    """A fake model under a given name and language set (a fused embedder's part)."""

    def __init__(self, name: str, languages: frozenset[str]) -> None:
        super().__init__()
        self._name, self._languages = name, languages

    @property
    def name(self) -> str:
        return self._name

    @property
    def languages(self) -> frozenset[str]:
        return self._languages


def test_the_monitor_reads_what_questions_log_under_the_default_fused_embedder(
    tmp_path: Path,
) -> None:
    """With the default routed multilingual embedder, each question's vector is logged under the
    name the monitor reads, and the multilingual part retrieval routed past is never run for it
    (it was: the fused vector was logged under the fused name, which the monitor never read)."""
    ws = workspace(tmp_path, reference_days=2, current_days=1)
    primary = NamedFake(ws.config.embedding.name, frozenset({"en"}))
    multilingual = NamedFake("use-multilingual-v3", frozenset({"en", "de", "ar"}))
    ws._embedder = FusedEmbedder([primary, multilingual], routed=True)  # type: ignore[assignment]
    ws.directory.add_user("ann", ["staff"])
    ann = ws.principal("ann")
    ws.search(ann, "where is the quarterly budget report kept")
    list(ws.ask(ann, "who approves the quarterly budget report"))
    ws.search(ann, "budget", QueryOptions(mode="text"))
    assert multilingual.calls == 0
    now = datetime.now(UTC)
    logged = ws.query_log.vectors(
        now - timedelta(hours=1), now + timedelta(hours=1), model=ws.monitored_model
    )
    assert logged.shape == (3, primary.dimension)
    assert check(ws, ws.config, now + timedelta(minutes=1), record=False).values["queries"] == 3
    ws.close()


def test_alert_webhook_must_be_an_allowed_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"govern\.alert_webhook"):
        parse_config({"govern": {"alert_webhook": "https://hooks.example.eu/x"}}, tmp_path)
    cfg = parse_config(
        {
            "govern": {"alert_webhook": "https://hooks.example.eu/x"},
            "flows": {"webhook_hosts": ["hooks.example.eu"]},
        },
        tmp_path,
    )
    assert cfg.govern.alert_webhook.endswith("/x")
    with pytest.raises(ConfigError, match="regression_threshold"):
        parse_config({"govern": {"regression_threshold": -1}}, tmp_path)


def test_monitor_check_exit_code_is_for_cron(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sovra.cli import app

    cfg = tmp_path / "sovra.toml"
    cfg.write_text('[workspace]\nhome = "home"\n[govern]\nmax_not_found_rate = 0.1\n')
    ws = workspace(tmp_path)
    ws.audit.append(ev("ask", NOW - timedelta(hours=2), outcome="answered", details={"flags": []}))
    ws.close()
    runner = CliRunner()
    at = ["--at", NOW.strftime("%Y-%m-%dT%H:%M:%S")]
    quiet = runner.invoke(app, ["--config", str(cfg), "monitor", "check", *at])
    assert quiet.exit_code == 0, quiet.output
    assert "no alerts" in quiet.output and "[govern] min_queries" in quiet.output
    ws = workspace(tmp_path)
    ws.audit.append(ev("ask", NOW - timedelta(hours=1), outcome="not_found"))
    ws.close()
    loud = runner.invoke(app, ["--config", str(cfg), "monitor", "check", *at])
    assert loud.exit_code == 1, loud.output
    assert "ALERT not_found_rate" in loud.output
    last = runner.invoke(app, ["--config", str(cfg), "monitor", "show", "--last", "--json"])
    assert last.exit_code == 0 and '"not_found_rate"' in last.output
