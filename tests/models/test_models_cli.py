"""`sovra model ...` through typer's CliRunner on a root app like the real `sovra` one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sovra.cli.kit import CliState
from sovra.cli.models import app as model_app
from tests.support.models import write_gguf_header


def make_root(config: Path) -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliState(config_path=config)

    root.add_typer(model_app, name="model")
    return root


@pytest.fixture
def cli(tmp_path: Path) -> tuple[typer.Typer, Path]:
    config = tmp_path / "sovra.toml"
    config.write_text('[workspace]\nhome = "data"\n')
    return make_root(config), tmp_path / "data"


def invoke(root: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(root, ["model", *args])
    return result.exit_code, result.stdout, result.stderr


def test_list_add_verify_remove(cli: tuple[typer.Typer, Path], tmp_path: Path) -> None:
    root, home = cli
    code, out, _ = invoke(root, "list", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = invoke(root, "list")
    assert code == 0 and "no models registered" in out
    model = write_gguf_header(tmp_path / "qwen.gguf", context_length=32768, file_type=18)
    code, out, err = invoke(
        root,
        "add",
        "qwen2.5-7b",
        str(model),
        "--licence",
        "Apache-2.0",
        "--language",
        "en",
        "--language",
        "zh",
        "--context-length",
        "8192",
        "--json",
    )
    assert code == 0, err
    entry = json.loads(out)
    assert entry["name"] == "qwen2.5-7b" and entry["languages"] == ["en", "zh"]
    assert entry["context_length"] == 8192 and entry["quantisation"] == "Q6_K"
    assert entry["instruction_tuned"] is True and entry["resolved_path"] == str(model)
    assert (home / "models.json").is_file()
    code, out, _ = invoke(root, "add", "base", str(model), "--base")
    assert code == 0 and "base model" in out and "registered" in out
    code, out, _ = invoke(root, "list", "--json")
    assert [(e["name"], e["instruction_tuned"]) for e in json.loads(out)] == [
        ("base", False),
        ("qwen2.5-7b", True),
    ]
    code, out, _ = invoke(root, "list")
    assert code == 0 and "qwen2.5-7b" in out and "Q6_K" in out
    code, out, _ = invoke(root, "verify", "base", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    model.write_bytes(model.read_bytes() + b"tampered")
    code, _, err = invoke(root, "verify", "base")
    assert code == 1 and "refused" in err and str(model) in err.replace("\n", "")
    code, out, _ = invoke(root, "remove", "base", "--json")
    assert code == 0 and json.loads(out)["name"] == "base"


def test_user_mistakes_are_one_clear_line(cli: tuple[typer.Typer, Path], tmp_path: Path) -> None:
    root, _ = cli
    code, out, err = invoke(root, "add", "x", str(tmp_path / "missing.gguf"))
    assert code == 1 and "does not exist" in err and "Traceback" not in out + err
    model = write_gguf_header(tmp_path / "m.gguf")
    assert invoke(root, "add", "m", str(model))[0] == 0
    code, _, err = invoke(root, "add", "m", str(model))
    assert code == 1 and "already registered" in err
    code, _, err = invoke(root, "add", "Bad Name", str(model))
    assert code == 1 and "not valid" in err
    code, _, err = invoke(root, "verify", "nope")
    assert code == 1 and "unknown model 'nope'" in err


def test_bad_config_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "sovra.toml"
    config.write_text("[workspace\n")
    code, _, err = invoke(make_root(config), "list")
    assert code == 1 and "not valid TOML" in err


def test_add_default(cli: tuple[typer.Typer, Path], model_home: Path) -> None:
    root, home = cli
    code, out, err = invoke(root, "add-default", "--json")
    assert code == 0, err
    entry = json.loads(out)
    assert entry["name"] == "gemma3-270m-base" and entry["instruction_tuned"] is False
    assert Path(entry["resolved_path"]).parent == home / "models"
    code, out, _ = invoke(root, "list", "--json")
    assert [e["name"] for e in json.loads(out)] == ["gemma3-270m-base"]


def test_export_builds_the_onnx_model_once_and_reports_it(
    cli: tuple[typer.Typer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.delenv("SOVRA_ONNX_CACHE", raising=False)  # the default place: the home
    root, home = cli
    code, out, err = invoke(root, "export", "--fp32", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["name"] == "all-minilm-l6-v2" and row["files"] == ["model.onnx"]
    assert Path(row["export_dir"]).is_relative_to(home / "cache" / "onnx")
    code, out, err = invoke(root, "export", "gemma-nope", "--json")
    assert code == 1 and "unknown model 'gemma-nope'" in err
