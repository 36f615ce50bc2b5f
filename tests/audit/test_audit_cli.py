"""`sovra audit …` and `sovra erase` through a root app built like the real one."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from sovra.audit import AuditLog, verify_receipt
from sovra.audit.note import NoteSigner
from sovra.cli import kit as clikit
from sovra.cli.audit import app, erase_command
from sovra.cli.kit import CliState
from tests.support.audit import LogFactory, make_event

root = typer.Typer()


@root.callback()
def _root(
    ctx: typer.Context, config: Annotated[Path | None, typer.Option("--config")] = None
) -> None:
    ctx.obj = CliState(config_path=config)


root.add_typer(app, name="audit")
root.command("erase")(erase_command)


Cli = tuple[CliRunner, Path, Path]


@pytest.fixture(params=["sqlite", "postgres"])
def cli(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cli]:
    for var in (
        "SOVRA_HOME",
        "SOVRA_CONFIG",
        "SOVRA_AUDIT_URL",
        "SOVRA_AUDIT_KEY",
        "SOVRA_AUDIT_SCHEMA",
    ):
        monkeypatch.delenv(var, raising=False)
    factory = LogFactory(request.param, tmp_path)
    for key, value in factory.env().items():
        if key.startswith("SOVRA_AUDIT_"):
            monkeypatch.setenv(key, value)
    config = tmp_path / "sovra.toml"
    config.write_text('[workspace]\nhome = "home"\n')
    yield CliRunner(), config, factory.home
    factory.cleanup()


@pytest.fixture
def sqlite_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for var in (
        "SOVRA_HOME",
        "SOVRA_CONFIG",
        "SOVRA_AUDIT_URL",
        "SOVRA_AUDIT_KEY",
        "SOVRA_AUDIT_SCHEMA",
    ):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "sovra.toml"
    config.write_text('[workspace]\nhome = "home"\n')
    return CliRunner(), config, tmp_path / "home"


def run(cli: Cli, *args: str) -> tuple[int, str, str]:
    runner, config, _ = cli
    result = runner.invoke(root, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.output


def _populate(home: Path) -> AuditLog:
    log = AuditLog.open(home)
    log.append_many([make_event(i) for i in range(6)])
    log.append(make_event(6, actor="user:alice", subject="alice", personal={"q": "alice's raise"}))
    log.append(make_event(7, action="search"))
    return log


def test_commands_need_an_existing_log(sqlite_cli: Cli) -> None:
    for args in (["audit", "verify"], ["audit", "show"], ["audit", "prove", "--leaf", "0"]):
        code, _, output = run(sqlite_cli, *args)
        assert code != 0 and "no audit log" in output
        assert "Traceback" not in output


def test_verify_show_prove_and_verify_receipt(cli: Cli, tmp_path: Path) -> None:
    log = _populate(cli[2])
    public_key = log.public_key
    log.close()
    code, out, _ = run(cli, "audit", "verify")
    assert code == 0 and "audit log OK: 8 entries" in out
    code, out, _ = run(cli, "audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True and json.loads(out)["size"] == 8
    held = tmp_path / "held.json"
    code, _, _ = run(cli, "audit", "prove", "--leaf", "7", "-o", str(held))
    assert run(cli, "audit", "verify", "--checkpoint", str(held))[0] == 0
    future = json.loads(held.read_text())
    future["checkpoint"] = future["checkpoint"].replace("\n8\n", "\n9\n", 1)
    held.write_text(json.dumps(future))
    code, _, output = run(cli, "audit", "verify", "--checkpoint", str(held))
    assert code == 1 and "held checkpoint is not valid" in output

    code, out, _ = run(cli, "audit", "show", "--json", "--action", "search")
    assert code == 0 and [r["index"] for r in json.loads(out)] == [7]
    code, out, _ = run(cli, "audit", "show", "--json", "--actor", "user:alice")
    assert [r["personal"] for r in json.loads(out)] == [{"q": "alice's raise"}]
    code, out, _ = run(cli, "audit", "show", "--json", "--since", "2999-01-01")
    assert code == 0 and json.loads(out) == []
    code, _, output = run(cli, "audit", "show", "--since", "last tuesday")
    assert code != 0 and "--since" in output
    console_width = clikit.out.width
    clikit.out.width = 200
    try:
        code, out, _ = run(cli, "audit", "show", "--action", "search")
    finally:
        clikit.out.width = console_width
    assert code == 0 and "search" in out and "policy-ask" in out

    receipt_path = tmp_path / "r.json"
    code, _, _ = run(cli, "audit", "prove", "--leaf", "3", "-o", str(receipt_path))
    assert code == 0
    assert verify_receipt(receipt_path.read_text(), public_key).index == 3
    code, out, _ = run(cli, "audit", "prove", "--leaf", "2")
    assert code == 0 and json.loads(out)["index"] == 2
    code, _, output = run(cli, "audit", "prove", "--leaf", "99")
    assert code != 0 and "entry 99 does not exist" in output

    code, out, _ = run(cli, "audit", "verify-receipt", str(receipt_path), "--json")
    assert code == 0 and json.loads(out)["valid"] is True
    key_file = tmp_path / "key.pub"
    key_file.write_text(public_key + "\n")
    code, out, _ = run(
        cli, "audit", "verify-receipt", str(receipt_path), "--public-key", str(key_file)
    )
    assert code == 0 and "receipt valid: entry 3" in out

    bad = json.loads(receipt_path.read_text())
    bad["index"] = 4
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(bad))
    code, _, output = run(
        cli, "audit", "verify-receipt", str(bad_path), "--public-key", str(key_file)
    )
    assert code == 1 and "NOT valid" in output and len(output.strip().splitlines()) == 1
    key_file.write_text(str(NoteSigner.generate("elsewhere.example/log").verifier) + "\n")
    code, _, output = run(
        cli, "audit", "verify-receipt", str(receipt_path), "--public-key", str(key_file)
    )
    assert code == 1 and "not signed by any trusted key" in output
    code, _, output = run(cli, "audit", "verify-receipt", str(tmp_path / "missing.json"))
    assert code == 1 and "not found" in output


def test_export_jsonl_and_csv_with_proofs(cli: Cli, tmp_path: Path) -> None:
    log = _populate(cli[2])
    key = log.public_key
    log.close()
    code, out, _ = run(cli, "audit", "export", "--format", "jsonl")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["index"] for line in lines] == list(range(8))
    for line in lines:
        assert verify_receipt(json.dumps(line["receipt"]), key).index == line["index"]
    target = tmp_path / "audit.csv"
    code, out, _ = run(cli, "audit", "export", "--format", "csv", "-o", str(target), "--json")
    assert code == 0 and json.loads(out)["entries"] == 8
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 8 and rows[6]["actor"] == "user:alice"
    assert all(r["inclusion_proof"] and r["checkpoint"] for r in rows)
    code, _, output = run(cli, "audit", "export", "--format", "xml")
    assert code != 0 and "jsonl or csv" in output


def test_erase_then_show_and_export_say_erased(cli: Cli) -> None:
    _populate(cli[2]).close()
    code, out, _ = run(cli, "erase", "--subject", "alice", "--json")
    assert code == 0 and json.loads(out)["erased"] is True
    code, out, _ = run(cli, "audit", "show", "--json")
    rows = json.loads(out)
    assert rows[6]["actor"] == "erased" and rows[6]["personal"] == "erased"
    assert rows[-1]["action"] == "erase"
    code, out, _ = run(cli, "audit", "export")
    assert "alice" not in out and '"erased"' in out
    code, _, output = run(cli, "erase", "--subject", "alice")
    assert code == 1 and "already erased" in output
    code, out, _ = run(cli, "audit", "verify")
    assert code == 0


def test_checkpoint_and_rotate_key(cli: Cli) -> None:
    _populate(cli[2]).close()
    code, out, _ = run(cli, "audit", "checkpoint", "--json")
    first = json.loads(out)
    assert code == 0 and first["size"] == 8 and first["checkpoint"].startswith(first["origin"])
    code, out, _ = run(cli, "audit", "checkpoint")
    assert code == 0 and "public key:" in out
    code, out, _ = run(cli, "audit", "rotate-key", "--json")
    rotated = json.loads(out)
    assert code == 0 and rotated["public_key"] != first["public_key"]
    assert rotated["public_keys"] == [first["public_key"], rotated["public_key"]]
    assert run(cli, "audit", "verify")[0] == 0


def test_verify_reports_the_tampered_entry(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    _populate(cli[2]).close()
    path = cli[2] / "audit" / "log.sqlite"
    data = bytearray(path.read_bytes())
    pos = data.index(b'"request_id":"req-4"') + len(b'"request_id":"req-')
    data[pos] = ord("9")
    path.write_bytes(bytes(data))
    code, _, output = run(cli, "audit", "verify")
    assert code == 1 and "entry 4" in output and "Traceback" not in output
    code, out, _ = run(cli, "audit", "verify", "--json")
    assert code == 1 and json.loads(out)["bad_index"] == 4


def test_auditor_without_the_signing_key_can_verify(cli: Cli) -> None:
    _populate(cli[2]).close()
    (cli[2] / "audit" / "keys" / "log.key").unlink()
    code, out, _ = run(cli, "audit", "verify")
    assert code == 0 and "audit log OK" in out
    assert run(cli, "audit", "prove", "--leaf", "1")[0] == 0
    code, _, output = run(cli, "audit", "checkpoint")
    assert code == 1 and "missing" in output


def test_verify_finds_the_log_through_the_shared_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only `[workspace] database_url` set (the replicas' one switch, `make demo-postgres`)
    the log lives in PostgreSQL: the CLI must not look for a local file and give up."""
    for var in ("SOVRA_HOME", "SOVRA_CONFIG", "SOVRA_AUDIT_URL", "SOVRA_AUDIT_KEY"):
        monkeypatch.delenv(var, raising=False)
    factory = LogFactory("postgres", tmp_path)
    try:
        assert factory.url is not None
        log = factory.open()
        log.append_many([make_event(i) for i in range(3)])
        log.close()
        monkeypatch.setenv("SOVRA_TEST_WS_DB", factory.url)
        monkeypatch.setenv("SOVRA_AUDIT_SCHEMA", factory.schema)
        config = tmp_path / "sovra.toml"
        # The same home as the writer (its signing key); no log file is in it.
        config.write_text('[workspace]\nhome = "home"\ndatabase_url = "env:SOVRA_TEST_WS_DB"\n')
        assert not (factory.home / "audit" / "log.sqlite").exists()
        code, out, output = run((CliRunner(), config, factory.home), "audit", "verify")
        assert code == 0 and "audit log OK: 3 entries" in out, output
    finally:
        factory.cleanup()
