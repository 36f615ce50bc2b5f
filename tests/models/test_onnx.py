"""ONNX Runtime serving of the packaged MiniLM: agreement with PyTorch, the int8 floor, the
content-keyed cache, and the fallback to PyTorch for a model that cannot export."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from sovra.config import EmbeddingConfig
from sovra.models import onnx
from sovra.models.embedding import (
    FusedEmbedder,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    build_embedder,
    default_model_dir,
)
from sovra.models.serving import ServingEmbedder

pytest.importorskip("onnxruntime")

TEXTS = [
    "How do I reset my VPN password?",
    "vpn",
    "",
    "The payment service returns HTTP 502 after the nginx upgrade; check the upstream keepalive.",
    "Die Rechnung wurde zweimal gebucht, bitte stornieren.",
    "¿Dónde está la política de vacaciones?",
    "Как восстановить доступ к почте после смены пароля?",
    "如何申请年假？请联系人力资源部。",
    "كيف أعيد تعيين كلمة المرور؟",
    "emoji 🚀 and symbols ∑ ≠ ∞ — dashes… and “quotes”",
    " ".join(f"sentence {i} about disk pressure on node {i % 7}." for i in range(200)),
]
# int8 dynamic quantisation of MiniLM, measured on TEXTS: worst row 0.972 (the empty text; the
# others 0.981-0.994). The floor leaves room for CPU kernel differences, not for a broken model.
INT8_FLOOR = 0.96


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx-cache") / "home" / "cache" / "onnx"
    old = os.umask(0o022)  # a permissive umask, as on many hosts: the export must not inherit it
    try:
        onnx.export_model(default_model_dir(), root, "int8")
    finally:
        os.umask(old)
    return root


def test_the_export_cache_is_owner_only(cache: Path) -> None:
    too_open = [
        f"{p.relative_to(cache.parent.parent)} {oct(p.stat().st_mode & 0o777)}"
        for p in [cache.parent, cache, *cache.rglob("*")]
        if p.stat().st_mode & 0o077
    ]
    assert too_open == []


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return SentenceTransformerEmbedder(threads=1).embed(TEXTS)


def _onnx(cache: Path, quantize: onnx.Quantize) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir=cache, quantize=quantize, threads=1, batch_size=4)


def test_fp32_export_agrees_with_pytorch(cache: Path, reference: np.ndarray) -> None:
    e = _onnx(cache, "none")
    got = e.embed(TEXTS)
    assert e.runtime == "onnx-fp32"
    assert got.shape == reference.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = np.sum(got * reference, axis=1)
    assert cos.min() >= 0.999, dict(zip(TEXTS, cos.round(5), strict=True))
    # One at a time (no padding) gives the same vectors as a padded batch.
    singles = np.vstack([e.embed([t]) for t in TEXTS])
    assert np.sum(singles * got, axis=1).min() >= 0.9999


def test_int8_stays_above_its_measured_floor(cache: Path, reference: np.ndarray) -> None:
    e = _onnx(cache, "int8")
    got = e.embed(TEXTS)
    assert e.runtime == "onnx-int8"
    cos = np.sum(got * reference, axis=1)
    assert cos.min() >= INT8_FLOOR, cos
    # Quantised, not a copy of the fp32 model: the vectors differ measurably.
    assert cos.min() < 0.9999


def test_identity_separates_runtimes_but_name_stays(cache: Path) -> None:
    fp32, int8 = _onnx(cache, "none"), _onnx(cache, "int8")
    torch = SentenceTransformerEmbedder()
    assert fp32.name == int8.name == torch.name
    assert len({fp32.identity, int8.identity, torch.identity}) == 3


def test_export_is_cached_by_content_and_leaves_the_model_dir_alone(cache: Path) -> None:
    model_dir = default_model_dir()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in model_dir.rglob("*"))
    calls: list[Path] = []
    original = onnx._export_fp32
    try:
        onnx._export_fp32 = lambda *a: calls.append(a[0])  # type: ignore[assignment]
        again = onnx.export_model(model_dir, cache, "int8")
    finally:
        onnx._export_fp32 = original  # type: ignore[assignment]
    assert calls == [] and (again / "model.onnx").is_file()
    assert again.name.startswith(onnx.content_digest(model_dir, cache)[:32])
    assert sorted((p.name, p.stat().st_mtime_ns) for p in model_dir.rglob("*")) == before


def _copy_without(tmp_path: Path, missing: str) -> Path:
    # Symlinks keep the copy cheap; the model loads the same from it.
    target = tmp_path / "model"
    for src in default_model_dir().rglob("*"):
        rel = src.relative_to(default_model_dir())
        if rel.as_posix() == missing or src.is_dir():
            continue
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).symlink_to(src)
    return target


def test_model_without_fast_tokenizer_falls_back_to_pytorch(
    tmp_path: Path, reference: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = _copy_without(tmp_path, "tokenizer.json")
    e = OnnxEmbedder(model_dir, cache_dir=tmp_path / "cache", threads=1)
    with caplog.at_level(logging.WARNING, logger="sovra.models.embedding"):
        got = e.embed(TEXTS[:3])
    assert e.runtime == "torch"
    assert "tokenizer.json" in (e.fallback_reason or "")
    assert any("runs on PyTorch" in r.getMessage() for r in caplog.records)
    assert np.sum(got * reference[:3], axis=1).min() >= 0.9999


def test_export_failure_falls_back_to_pytorch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("Unsupported ONNX opset for aten::frobnicate")

    monkeypatch.setattr(onnx, "_export_fp32", broken)
    model_dir = _copy_without(tmp_path, "README.md")
    e = OnnxEmbedder(model_dir, cache_dir=tmp_path / "cache", threads=1)
    assert e.embed(["hello"]).shape == (1, 384)
    assert e.runtime == "torch"
    assert "aten::frobnicate" in (e.fallback_reason or "")
    assert not list((tmp_path / "cache").glob("*/model.onnx"))


def test_layout_refuses_unknown_heads(tmp_path: Path) -> None:
    model_dir = _copy_without(tmp_path, "modules.json")
    (model_dir / "modules.json").write_text(
        '[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},'
        '{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},'
        '{"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}]'
    )
    with pytest.raises(onnx.ExportRefused, match="Dense"):
        onnx.read_layout(model_dir)


def test_build_embedder_picks_the_runtime(tmp_path: Path) -> None:
    off = {"multilingual": "off"}
    on = build_embedder(EmbeddingConfig(**off), Path, cache_dir=tmp_path)
    assert isinstance(on, OnnxEmbedder)
    torch = build_embedder(EmbeddingConfig(runtime="torch", **off), Path, cache_dir=tmp_path)
    assert isinstance(torch, SentenceTransformerEmbedder)
    # Without a cache directory there is nowhere to export to: PyTorch.
    assert isinstance(build_embedder(EmbeddingConfig(**off), Path), SentenceTransformerEmbedder)
    # The server's embedder caches and batches each model on its own, facts still visible.
    served = build_embedder(EmbeddingConfig(), Path, cache_dir=tmp_path, serving=True)
    assert isinstance(served, FusedEmbedder)
    assert all(isinstance(p, ServingEmbedder) for p in served.parts)
    assert served.parts[0].path == default_model_dir()  # type: ignore[attr-defined]
    assert {p.batcher.window_s for p in served.parts} == {0.002}  # type: ignore[attr-defined]
