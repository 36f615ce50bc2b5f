"""Usage accounting: records, grouped reports, --since, erasure, and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from sovra.cli.kit import CliState
from sovra.cli.reports import parse_since, report_usage_command
from sovra.policy.usage import ERASED, UsageLedger
from tests.support.policy import endpoint, user

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
LOCAL = endpoint("local", pii="allow")
EU = endpoint("eu", hosting="regional_cloud", jurisdiction="eu", cost_per_1k_tokens=0.5)


def fill(ledger: UsageLedger) -> None:
    ledger.record(user("alice"), LOCAL, tokens_in=900, tokens_out=100, latency_ms=50, time=T0)
    ledger.record(
        user("bob"),
        EU,
        tokens_in=1500,
        tokens_out=500,
        latency_ms=300,
        time=T0 + timedelta(days=1),
        request_id="r2",
    )
    ledger.record(
        user("bob"), EU, tokens_in=100, tokens_out=100, latency_ms=100, time=T0 + timedelta(days=2)
    )


def test_reports_by_endpoint_user_group_and_since(tmp_path: Path) -> None:
    with UsageLedger.in_home(tmp_path) as ledger:
        fill(ledger)
        by_endpoint = {r.key: r for r in ledger.report("endpoint")}
        assert by_endpoint["eu"].calls == 2 and by_endpoint["eu"].cost == pytest.approx(1.1)
        assert by_endpoint["eu"].latency_ms_avg == 200
        assert by_endpoint["local"].cost == 0 and by_endpoint["local"].tokens_in == 900
        by_group = {r.key: r.calls for r in ledger.report("group")}
        assert by_group == {"staff": 3, "it-support": 2, "sre": 1}
        recent = ledger.report("user", since=T0 + timedelta(hours=12))
        assert [(r.key, r.calls) for r in recent] == [("bob", 2)]
        with pytest.raises(ValueError, match="negative"):
            ledger.record(user("bob"), EU, tokens_in=-1, tokens_out=0, latency_ms=1)


def test_cost_is_fixed_at_record_time_and_persists(tmp_path: Path) -> None:
    with UsageLedger.in_home(tmp_path) as ledger:
        fill(ledger)
    with UsageLedger.in_home(tmp_path) as reopened:
        assert reopened.totals() == (3, 3200, pytest.approx(1.1))


def test_erase_principal_keeps_totals(tmp_path: Path) -> None:
    with UsageLedger.in_home(tmp_path) as ledger:
        fill(ledger)
        assert ledger.erase_principal("bob") == 2
        users = {r.key: r.calls for r in ledger.report("user")}
        assert users == {ERASED: 2, "alice": 1}
        assert {r.key: r.calls for r in ledger.report("group")}["it-support"] == 2


root = typer.Typer()


@root.callback()
def _root(
    ctx: typer.Context, config: Annotated[Path | None, typer.Option("--config")] = None
) -> None:
    ctx.obj = CliState(config_path=config)


@root.command("usage")
def _usage(
    ctx: typer.Context,
    by: Annotated[str, typer.Option("--by")] = "endpoint",
    since: Annotated[str | None, typer.Option("--since")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    report_usage_command(ctx, by, since, json_out)


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    config = tmp_path / "sovra.toml"
    config.write_text('[workspace]\nhome = "home"\n')
    runner = CliRunner()
    result = runner.invoke(root, ["--config", str(config), "usage"])
    assert result.exit_code == 0 and "no model calls recorded" in result.output
    with UsageLedger.in_home(tmp_path / "home") as ledger:
        fill(ledger)
    result = runner.invoke(root, ["--config", str(config), "usage", "--by", "user", "--json"])
    rows = json.loads(result.output)["rows"]
    assert [(r["key"], r["calls"]) for r in rows] == [("bob", 2), ("alice", 1)]
    result = runner.invoke(root, ["--config", str(config), "usage", "--by", "team"])
    assert result.exit_code == 1 and "use user, group or endpoint" in result.output
    result = runner.invoke(root, ["--config", str(config), "usage", "--since", "last week"])
    assert result.exit_code == 1 and "--since 'last week'" in result.output


def test_parse_since() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
