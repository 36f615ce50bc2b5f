"""`sovra policy check|test` and `sovra endpoint list|show` through a root app like the real one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from sovra.cli.endpoints import endpoint_app
from sovra.cli.kit import CliState
from sovra.cli.policy import policy_app
from sovra.directory import Directory

root = typer.Typer()


@root.callback()
def _root(
    ctx: typer.Context, config: Annotated[Path | None, typer.Option("--config")] = None
) -> None:
    ctx.obj = CliState(config_path=config)


root.add_typer(policy_app, name="policy")
root.add_typer(endpoint_app, name="endpoint")

TABLE = Path(__file__).resolve().parents[2] / "src/sovra/policy/defaults/demo-decisions.yaml"

CONFIG = """
[workspace]
home = "home"
region = "eu-de"

[[sources]]
name = "handbook"
kind = "folder"
path = "docs"
access = ["group:staff"]
residency = "eu"

  [[sources.rules]]
  match = "departments/people-talent/**"
  access = ["group:people"]
  classification = "confidential"

[[sources]]
name = "tickets"
kind = "records"
path = "t.csv"
access = ["group:it-support"]
classification = "confidential"
residency = "eu"

[[endpoints]]
name = "local"
kind = "embedded"
model = "qwen"
max_classification = "confidential"
pii = "allow"

[[endpoints]]
name = "eu-cloud"
kind = "openai"
model = "mistral"
base_url = "https://llm.example.eu/v1"
api_key_env = "SOVRA_TEST_EU_KEY"
hosting = "regional_cloud"
jurisdiction = "eu-fr"
max_classification = "confidential"
pii = "redact"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    monkeypatch.delenv("SOVRA_TEST_EU_KEY", raising=False)
    path = tmp_path / "sovra.toml"
    path.write_text(CONFIG)
    directory = Directory.in_home(tmp_path / "home")
    directory.add_user("bob", ["staff", "it-support"])
    directory.add_user("dana", ["staff", "people"])
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(root, ["--config", str(config), *args])
    return result.exit_code, result.output


def test_check_allow_and_deny_explained(config: Path) -> None:
    code, text = run(
        config, "policy", "check", "--as", "bob", "--action", "ask", "--resource", "source:tickets"
    )
    assert code == 0 and "ALLOW bob ask source:tickets" in text and "read-by-access" in text
    code, text = run(config, "policy", "check", "--as", "bob", "--action", "export")
    assert code == 2 and "DENY" in text and "default deny" in text


def test_check_document_uses_the_source_rules(config: Path) -> None:
    doc = "document:handbook:departments/people-talent/pay.md"
    assert (
        run(config, "policy", "check", "--as", "dana", "--action", "ask", "--resource", doc)[0] == 0
    )
    code, _ = run(config, "policy", "check", "--as", "bob", "--action", "ask", "--resource", doc)
    assert code == 2


def test_check_send_to_endpoint_json(config: Path) -> None:
    code, text = run(
        config,
        "policy",
        "check",
        "--as",
        "bob",
        "--action",
        "send_to_endpoint",
        "--resource",
        "endpoint:eu-cloud",
        "--classification",
        "restricted",
        "--residency",
        "eu",
        "--json",
    )
    data = json.loads(text)
    assert code == 2 and data["decision"] == "deny"
    assert "restricted-on-prem-only" in data["policy_ids"]
    assert any("on_prem" in a for a in data["advice"])


def test_check_ad_hoc_groups_and_errors(config: Path) -> None:
    code, _ = run(
        config, "policy", "check", "--as", "zoe", "--group", "admins", "--action", "erase"
    )
    assert code == 0
    code, text = run(config, "policy", "check", "--as", "nobody", "--action", "ask")
    assert code == 1 and "nobody" in text
    code, text = run(
        config, "policy", "check", "--as", "bob", "--action", "ask", "--resource", "source:wiki"
    )
    assert code == 1 and "unknown source 'wiki'" in text


def test_check_broken_policy_file_is_one_clear_line(config: Path) -> None:
    policies = config.parent / "home" / "policies"
    policies.mkdir(parents=True)
    (policies / "mine.cedar").write_text('@id("x")\npermit (principal, action resource);\n')
    code, text = run(config, "policy", "check", "--as", "bob", "--action", "ask")
    assert code == 1 and "mine.cedar:1" in text and "Traceback" not in text


def test_policy_test_runs_the_demo_table(config: Path) -> None:
    code, text = run(config, "policy", "test", str(TABLE))
    assert code == 0 and "162/162 decisions as expected" in text


def test_policy_test_reports_failures(config: Path, tmp_path: Path) -> None:
    folder = tmp_path / "strict"
    folder.mkdir()
    (folder / "only.cedar").write_text('@id("nothing")\nforbid (principal, action, resource);\n')
    code, text = run(config, "policy", "test", str(TABLE), "--policies", str(folder), "--json")
    data = json.loads(text)
    assert code == 1 and data["cases"] == 162 and len(data["failed"]) > 50
    code, text = run(config, "policy", "test", str(tmp_path / "missing.yaml"))
    assert code == 1 and "cannot read" in text


def test_endpoint_list_and_show_never_print_secrets(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, text = run(config, "endpoint", "list", "--json")
    data = json.loads(text)
    assert code == 0 and [e["name"] for e in data] == ["local", "eu-cloud"]
    assert data[1]["credentials"] == "missing"
    monkeypatch.setenv("SOVRA_TEST_EU_KEY", "sk-very-secret")
    code, text = run(config, "endpoint", "show", "eu-cloud")
    assert code == 0 and "regional_cloud" in text and "set" in text
    assert "sk-very-secret" not in text
    code, text = run(config, "endpoint", "show", "nope")
    assert code == 1 and "unknown endpoint 'nope'" in text


def test_endpoint_add_and_remove_edit_the_config(config: Path) -> None:
    before = config.read_text()
    code, text = run(
        config,
        "endpoint",
        "add",
        "vllm",
        "--kind",
        "openai",
        "--model",
        "qwen",
        "--base-url",
        "http://10.0.0.5:8000/v1",
        "--max-classification",
        "confidential",
        "--pii",
        "redact",
        "--api-key-env",
        "VLLM_KEY",
    )
    assert code == 0, text
    after = config.read_text()
    assert after.startswith(before) and 'base_url = "http://10.0.0.5:8000/v1"' in after
    code, text = run(config, "endpoint", "show", "vllm", "--json")
    shown = json.loads(text)
    assert shown["pii"] == "redact" and shown["api_key_env"] == "VLLM_KEY"

    # refused edits leave the file untouched
    for args, message in (
        (["add", "vllm", "--kind", "embedded", "--model", "m"], "used twice"),
        (["add", "x", "--kind", "openai", "--model", "m"], "needs base_url"),
        (
            ["add", "y", "--kind", "embedded", "--model", "m", "--max-classification", "secret"],
            "unknown classification 'secret'",
        ),
        (["remove", "nope"], "no [[endpoints]] block with name = 'nope'"),
    ):
        snapshot = config.read_text()
        code, text = run(config, "endpoint", *args)
        assert code == 1 and message in " ".join(text.split()), text
        assert config.read_text() == snapshot

    code, _ = run(config, "endpoint", "remove", "local")
    assert code == 0
    code, text = run(config, "endpoint", "list", "--json")
    assert [e["name"] for e in json.loads(text)] == ["eu-cloud", "vllm"]
    assert "[[sources.rules]]" in config.read_text()  # the rest of the file is kept


def test_endpoint_in_use_cannot_be_removed(config: Path) -> None:
    config.write_text(config.read_text() + '\n[answer]\nendpoint = "local"\n')
    snapshot = config.read_text()
    code, text = run(config, "endpoint", "remove", "local")
    assert code == 1 and "answer.endpoint" in text
    assert config.read_text() == snapshot
