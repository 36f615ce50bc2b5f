"""The AI inventory: every model, endpoint, the assistant and each workflow, with gaps for what
nobody stated; operator fields kept owner-only and each change audited; evaluations attached."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from sovra.cli import app
from sovra.governance.inventory import (
    InventoryError,
    UnknownSystem,
    build_inventory,
    find_system,
    set_fields,
)
from sovra.workspace import Workspace
from tests.support.governance import known_site


@pytest.fixture
def ws(tmp_path: Path) -> Any:
    workspace = known_site(tmp_path / "site")
    home = workspace.home
    (home / "models.json").write_text(
        json.dumps(
            {
                "version": 1,
                "models": [
                    {
                        "name": "gemma3-270m-base",
                        "kind": "gguf",
                        "path": "models/gemma.gguf",
                        "sha256": "ab" * 32,
                        "size_bytes": 1234,
                        "licence": "Gemma Terms of Use",
                    },
                    {
                        "name": "mystery",
                        "kind": "gguf",
                        "path": "models/m.gguf",
                        "sha256": "cd" * 32,
                        "size_bytes": 10,
                    },
                ],
            }
        )
    )
    yield workspace
    workspace.close()


def test_every_model_and_endpoint_is_listed_with_its_gaps(ws: Workspace) -> None:
    systems = {s.id: s for s in build_inventory(ws, runs=[])}
    assert {
        "model:gemma3-270m-base",
        "model:mystery",
        "endpoint:local-llm",
        "endpoint:eu-cloud",
        "assistant:ask",
        "workflow:triage",
    } <= set(systems)
    gemma = systems["model:gemma3-270m-base"]
    assert gemma.facts["sha256"] == "ab" * 32
    assert not any(g.startswith("licence") for g in gemma.gaps)
    assert any(g.startswith("origin") for g in gemma.gaps)
    assert any(g.startswith("licence") for g in systems["model:mystery"].gaps)
    # On premises needs no transfer basis; a regional cloud without one is a gap.
    assert not any(g.startswith("legal_basis") for g in systems["endpoint:local-llm"].gaps)
    assert any(g.startswith("legal_basis") for g in systems["endpoint:eu-cloud"].gaps)
    triage = systems["workflow:triage"]
    for field in ("purpose", "risk_class", "owners", "evaluation"):
        assert any(g.startswith(field) for g in triage.gaps), (field, triage.gaps)
    assert (
        "risk_class: not set (sovra inventory set workflow:triage --risk-class ...)" in triage.gaps
    )
    assert "owners: not set (sovra inventory set workflow:triage --owner ...)" in triage.gaps
    assert any("approval step 'approval'" in m and "it-support" in m for m in triage.oversight)
    # Nothing invented: unset operator fields stay empty.
    d = triage.to_dict()
    assert d["purpose"] is None and d["risk_class"] is None and d["owners"] == []


def test_set_fields_are_stored_owner_only_audited_and_close_gaps(ws: Workspace) -> None:
    size = ws.audit.size
    updated = set_fields(
        ws,
        "workflow:triage",
        {"purpose": "Triage IT tickets", "risk_class": "limited", "owners": ("erin", "root")},
    )
    assert updated.operator.purpose == "Triage IT tickets"
    assert [g for g in updated.gaps if not g.startswith("evaluation")] == []
    path = ws.home / "governance" / "inventory.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["systems"]["workflow:triage"]["owners"] == ["erin", "root"]
    event = list(ws.audit.events(start=size))[-1].view
    assert event["action"] == "inventory.set"
    assert event["details"] == {
        "system": "workflow:triage",
        "fields": ["owners", "purpose", "risk_class"],
    }
    with pytest.raises(InventoryError, match="not an AI Act category"):
        set_fields(ws, "workflow:triage", {"risk_class": "spicy"})
    with pytest.raises(UnknownSystem, match="known: "):
        set_fields(ws, "workflow:nope", {"purpose": "x"})
    with pytest.raises(InventoryError, match="unknown inventory field"):
        set_fields(ws, "workflow:triage", {"colour": "blue"})


def test_latest_evaluation_per_suite_is_attached(ws: Workspace) -> None:
    def run(suite: str, day: int, recall: float) -> SimpleNamespace:
        return SimpleNamespace(
            run_id=f"{suite}-{day}",
            suite=suite,
            started_at=datetime(2026, 11, day, tzinfo=UTC),
            metrics={"recall_at_10": recall},
            params={},
        )

    runs = [run("retrieval", 20, 0.9), run("retrieval", 10, 0.8), run("triage", 15, 0.7)]
    systems = build_inventory(ws, runs=runs)
    ask = find_system(systems, "assistant:ask")
    assert [(e.run_id, e.metrics) for e in ask.evaluations] == [
        ("retrieval-20", {"recall_at_10": 0.9})
    ]
    assert not any(g.startswith("evaluation") for g in ask.gaps)
    triage = find_system(systems, "workflow:triage")
    assert [e.run_id for e in triage.evaluations] == ["triage-15"]


def test_cli_list_show_set(ws: Workspace) -> None:
    cfg = ws.config.base_dir / "sovra.toml"
    runner = CliRunner()
    listed = runner.invoke(app, ["--config", str(cfg), "inventory", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    ids = {s["id"] for s in json.loads(listed.stdout)}
    assert "endpoint:eu-cloud" in ids and "model:mystery" in ids
    set_ = runner.invoke(
        app,
        [
            "--config",
            str(cfg),
            "inventory",
            "set",
            "endpoint:eu-cloud",
            "--owner",
            "root",
            "--json",
        ],
    )
    assert set_.exit_code == 0, set_.output
    assert json.loads(set_.stdout)["owners"] == ["root"]
    shown = runner.invoke(app, ["--config", str(cfg), "inventory", "show", "endpoint:eu-cloud"])
    assert shown.exit_code == 0 and "legal_basis" in shown.output
    missing = runner.invoke(app, ["--config", str(cfg), "inventory", "show", "model:nope"])
    assert missing.exit_code == 2 and "no AI system 'model:nope'" in missing.output
