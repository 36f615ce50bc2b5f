"""The issue's "Done" through the real CLI: the `sovra.toml` of docs/connectors.md with a sql
source over a product table created here in PostgreSQL and a git source over a repository of
the sample runbooks built here; `sovra source sync --all`, then search as the demo users."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sovra.cli import app
from tests.sources.conftest import Database
from tests.sources.gitrepo import Repo
from tests.support.ingest import COMPANY

DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"
runner = CliRunner()

PRODUCTS = [
    ("SKU-100", "Etcd backup appliance", "Snapshot appliance for etcd clusters.", "hw", "sre"),
    ("SKU-200", "Payroll seat licence", "Monthly payroll software seat.", "sw", "people"),
    ("SKU-300", "Ergonomic office chair", "Adjustable lumbar support chair.", "furniture", ""),
]


def example_toml() -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Example: product catalogue and runbooks") :]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found, "docs/connectors.md lost its example"
    return found.group(1)


@pytest.fixture
def site(
    tmp_path: Path, postgres_database: Database, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    db = postgres_database
    db.run("DROP TABLE IF EXISTS products")
    db.run(
        "CREATE TABLE products (sku VARCHAR(20) PRIMARY KEY, name TEXT, description TEXT,"
        " category TEXT, price NUMERIC(8,2), owner_team TEXT, updated_at TIMESTAMPTZ"
        " DEFAULT now())"
    )
    for sku, name, desc, cat, team in PRODUCTS:
        db.run(
            "INSERT INTO products (sku, name, description, category, price, owner_team)"
            " VALUES (:s, :n, :d, :c, 10, :t)",
            s=sku, n=name, d=desc, c=cat, t=team,
        )  # fmt: skip
    monkeypatch.setenv("CATALOGUE_DATABASE_URL", db.url)
    runbooks = sorted((COMPANY / "runbooks" / "alerts" / "cluster-etcd-operator").glob("*.md"))
    files = {f"alerts/{p.name}": p.read_bytes() for p in runbooks[:6]}
    Repo(tmp_path / "runbooks.git", bare=True).commit(files, "runbooks")
    (tmp_path / "sovra.toml").write_text(example_toml(), encoding="utf-8")
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def sovra(*args: str) -> Any:
    return runner.invoke(app, ["--config", "sovra.toml", *args], catch_exceptions=False)


def hits(query: str, user: str) -> list[dict[str, Any]]:
    result = sovra("search", query, "--as", user, "--json", "--no-group", "--mode", "text")
    assert result.exit_code == 0, result.output
    found: list[dict[str, Any]] = json.loads(result.output)["hits"]
    return found


def test_sql_and_git_sources_sync_and_cite(site: Path) -> None:
    assert sovra("init", "--demo-directory").exit_code == 0
    result = sovra("source", "sync", "--all", "--bm25-only", "--json")
    assert result.exit_code == 0, result.output
    reports = {r["source"]: r for r in json.loads(result.output)}
    assert reports["catalogue"]["counts"]["added"] == 3
    assert reports["runbooks"]["counts"]["added"] == 6

    # alice (staff, sre): the sre-owned product and the runbooks, with their citations.
    sre = hits("etcd snapshot appliance", "alice")
    assert sre[0]["document_id"] == "catalogue:SKU-100"
    assert re.fullmatch(
        r"postgresql://127\.0\.0\.1:\d+/sovra_t_\w+/products#SKU-100", sre[0]["uri"]
    )
    books = [h for h in hits("etcd database quota low space", "alice") if h["source"] == "runbooks"]
    assert books and re.fullmatch(
        r"git\.example\.org/ops/runbooks@[0-9a-f]{40}:alerts/etcd\w+\.md#L\d+", books[0]["uri"]
    )
    # carol (staff only): the chair, not the sre product, not the people product, no runbooks.
    assert [h["document_id"] for h in hits("ergonomic chair", "carol")] == ["catalogue:SKU-300"]
    assert hits("etcd snapshot appliance", "carol") == []
    assert hits("payroll seat", "carol") == []
    assert [h["document_id"] for h in hits("payroll seat", "dana")] == ["catalogue:SKU-200"]
    assert hits("etcd database quota", "carol") == []
    listed = sovra("source", "list", "--json")
    assert "env:CATALOGUE_DATABASE_URL" in listed.output and "reader" not in listed.output
