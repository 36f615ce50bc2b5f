"""The one error root: every package error has a kind, old `except` clauses still catch the
split-off kinds, and the CLI turns a kind into its exit code and one line (cli.kit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from sovra.audit.log import AuditError, AuditNotFound, AuditUnavailable
from sovra.cli import app
from sovra.cli.kit import CliState, SovraGroup, exit_code
from sovra.config import ConfigError
from sovra.directory import Directory, DirectoryError, UnknownUser
from sovra.domain import DomainError
from sovra.egress import EgressDenied
from sovra.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SovraError,
    Unavailable,
    kind_of,
)
from sovra.flows.approvals import ApprovalRefused, NotAllowed
from sovra.flows.base import ActionError, FlowConflict, FlowError, FlowNotFound
from sovra.index.base import IndexError_
from sovra.models.base import ModelError, ModelUnavailable
from sovra.models.generation import BadGenerationRequest, GenerationError
from sovra.models.openai_compat import EgressRefused
from sovra.models.registry import RegistryError, UnknownModel
from sovra.policy import PolicyError
from sovra.server.accounts import AccountError, UnknownApiKey
from sovra.sources.base import DocumentNotFound, MalformedDocument, SourceUnavailable


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConfigError("x"), Invalid),
        (DirectoryError("x"), Invalid),
        (UnknownUser("x"), NotFound),
        (DomainError("x"), Invalid),
        (PolicyError("x"), Invalid),
        (FlowError("x"), Invalid),
        (FlowNotFound("x"), NotFound),
        (FlowConflict("x"), Conflict),
        (NotAllowed("x"), Forbidden),
        (ApprovalRefused("x"), Forbidden),
        (ActionError("x", retryable=True), Unavailable),
        (ModelError("x"), Invalid),
        (ModelUnavailable("x"), Unavailable),
        (RegistryError("x"), Invalid),
        (UnknownModel("x"), NotFound),
        (GenerationError("x"), Unavailable),
        (BadGenerationRequest("x"), Invalid),
        (EgressDenied("x"), Unavailable),
        (EgressRefused("x"), Unavailable),
        (AuditError("x"), Invalid),
        (AuditNotFound("x"), NotFound),
        (AuditUnavailable("x"), Unavailable),
        (IndexError_("x"), Unavailable),
        (SourceUnavailable("x"), Unavailable),
        (MalformedDocument("doc-1", "truncated"), Invalid),
        (DocumentNotFound("doc-1", "gone"), NotFound),
        (AccountError("x"), Invalid),
        (UnknownApiKey("x"), NotFound),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
)
def test_every_package_error_has_one_kind(error: SovraError, kind: type[SovraError]) -> None:
    assert isinstance(error, SovraError)
    assert kind_of(error) is kind


def test_split_kinds_are_still_caught_by_the_old_name(tmp_path: Path) -> None:
    directory = Directory.in_home(tmp_path)
    with pytest.raises(DirectoryError) as caught:
        directory.principal("mallory")
    assert isinstance(caught.value, UnknownUser) and kind_of(caught.value) is NotFound
    # Errors that were ValueErrors stay ValueErrors for the callers that catch those.
    assert isinstance(DomainError("x"), ValueError)


def test_hint_follows_the_message() -> None:
    assert Invalid("k must be positive", hint="set search.k = 10").message == (
        "k must be positive; set search.k = 10"
    )
    assert Invalid("k must be positive").message == "k must be positive"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    path = tmp_path / "sovra.toml"
    path.write_text('[workspace]\nhome = "data"\n', encoding="utf-8")
    return path


def test_cli_not_found_is_exit_2_and_one_line(config: Path) -> None:
    result = CliRunner().invoke(app, ["--config", str(config), "user", "remove", "mallory"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown user 'mallory'")


def test_cli_invalid_is_exit_2_and_one_line(config: Path) -> None:
    result = CliRunner().invoke(app, ["--config", str(config), "user", "add", "a b"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "user name 'a b' is not allowed" in lines[0]
    assert "Traceback" not in result.output


def test_cli_bad_config_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "sovra.toml").write_text("[search]\nk = -1\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "sovra.toml"), "user", "list"])
    assert result.exit_code == 2 and "search.k" in result.stderr


def _app_raising(error: SovraError) -> typer.Typer:
    """A root app like sovra's (same group class and --debug flag) whose command raises."""
    root = typer.Typer(cls=SovraGroup)

    @root.callback()
    def _root(ctx: typer.Context, debug: Annotated[bool, typer.Option("--debug")] = False) -> None:
        ctx.obj = CliState(debug=debug)

    @root.command()
    def go() -> None:
        raise error

    return root


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Invalid("bad value"), 2),
        (NotFound("no such thing"), 2),
        (Conflict("already decided"), 2),
        (Forbidden("separation of duties"), 3),
        (Unavailable("endpoint down"), 4),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_each_kind_has_its_exit_code(error: SovraError, code: int) -> None:
    assert exit_code(error) == code
    result = CliRunner().invoke(_app_raising(error), ["go"])
    assert result.exit_code == code
    assert result.stderr.strip() == f"error: {error}"


def test_debug_shows_the_traceback_instead() -> None:
    result = CliRunner().invoke(_app_raising(Forbidden("no")), ["--debug", "go"])
    assert isinstance(result.exception, Forbidden)
