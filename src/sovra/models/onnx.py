"""Sentence-transformers encoders on ONNX Runtime: exported once from the local model directory,
optionally int8-quantised, cached under the sovra home keyed by the model's content digest.

The export never downloads anything: it reads the same directory PyTorch would load (which may
sit read-only in site-packages) and writes only into the cache. Each export is checked against
PyTorch on a few texts before it is used; a model whose layout the exporter does not know (a
Dense head, max pooling, no fast tokenizer) or whose export disagrees is refused with the reason,
and the caller falls back to PyTorch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sovra.models.base import ModelError, ModelUnavailable, Vectors
from sovra.storage import private_files

log = logging.getLogger(__name__)

Quantize = Literal["none", "int8"]
OPSET = 17
EXPORT_VERSION = 2
"""Bumped when the exported graph changes shape, so old cache entries are not reused.
v2: eager attention and ORT's fused BERT operators (v1 traced SDPA: 18% more CPU per chunk)."""
MIN_EXPORT_COSINE = 0.999
"""An fp32 export must agree with PyTorch at least this well on the check texts."""
MIN_INT8_COSINE = 0.95
"""The int8 model's floor on the check texts (measured: see tests/models/test_onnx.py)."""

CHECK_TEXTS: tuple[str, ...] = (
    "How do I reset my VPN password?",
    "The pod is crash-looping after the last deploy; roll back the release and page on-call.",
    "Die Rechnung wurde zweimal gebucht.",
    "Как восстановить доступ к почте?",
    "如何申请年假",
    "",
    "word " * 400,
)


class ExportRefused(ModelError):
    """This model directory cannot be served on ONNX Runtime; the message says why."""


@dataclass(frozen=True)
class Layout:
    """What the export needs to know about a sentence-transformers directory."""

    pooling: Literal["mean", "cls"]
    normalize: bool
    max_length: int


def read_layout(model_dir: Path) -> Layout:
    """The pooling, normalisation and length of a Transformer → Pooling [→ Normalize] model."""
    if not (model_dir / "tokenizer.json").is_file():
        raise ExportRefused(f"{model_dir} has no tokenizer.json (fast tokenizer)")
    modules_file = model_dir / "modules.json"
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        types = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportRefused(f"cannot read {modules_file}: {exc}") from None
    if types[:2] != ["Transformer", "Pooling"] or any(t != "Normalize" for t in types[2:]):
        raise ExportRefused(
            f"{model_dir}: modules {types} are not Transformer, Pooling[, Normalize]"
        )
    pool_dir = next(m["path"] for m in modules if str(m["type"]).endswith("Pooling"))
    try:
        pool = json.loads((model_dir / pool_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportRefused(f"cannot read the pooling config of {model_dir}: {exc}") from None
    modes = [k for k, v in pool.items() if k.startswith("pooling_mode_") and v]
    if modes == ["pooling_mode_mean_tokens"]:
        pooling: Literal["mean", "cls"] = "mean"
    elif modes == ["pooling_mode_cls_token"]:
        pooling = "cls"
    else:
        raise ExportRefused(f"{model_dir}: pooling {modes} is not mean or cls")
    max_length = 512
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cfg = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
        max_length = int(cfg["max_seq_length"])
    return Layout(pooling=pooling, normalize="Normalize" in types, max_length=max_length)


def _fingerprint(model_dir: Path) -> str:
    # Cheap stand-in for the content digest: paths, sizes and mtimes. It only decides whether
    # the (expensive) sha256 must be recomputed; the cache is keyed by the sha256 itself.
    rows = sorted(
        f"{p.relative_to(model_dir).as_posix()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in model_dir.rglob("*")
        if p.is_file() and not p.is_symlink()
    )
    return "\n".join([str(model_dir.resolve()), *rows])


def content_digest(model_dir: Path, cache_root: Path) -> str:
    """The sha256 of the model directory (registry.model_sha256), memoised by a stat fingerprint."""
    import hashlib

    from sovra.models.registry import model_sha256

    fp = hashlib.sha256(_fingerprint(model_dir).encode()).hexdigest()
    memo = cache_root / "digests" / fp
    with contextlib.suppress(OSError):
        return memo.read_text(encoding="ascii").strip()
    digest, _ = model_sha256(model_dir)
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(digest, encoding="ascii")
    return digest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _torch_reference(model_dir: Path, texts: Sequence[str]) -> Vectors:
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    out = model.encode(
        list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(out, dtype=np.float32)


def _export_fp32(model_dir: Path, layout: Layout, target: Path) -> None:
    import torch
    import transformers
    from transformers import AutoModel

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # Eager attention traces to MatMul/Softmax, which ORT fuses into one Attention operator;
    # the SDPA path traces to Where/IsNaN masking that nothing fuses (16% of the kernel time).
    base = AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, attn_implementation="eager"
    )
    base.eval()

    class Pooled(torch.nn.Module):
        # Pooling and normalisation inside the graph: one ORT call returns the final vectors.
        def __init__(self) -> None:
            super().__init__()
            self.base = base

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.base(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            if layout.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if layout.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    ids = torch.ones((2, 8), dtype=torch.long)
    mask = ids.clone()
    mask[1, 5:] = 0  # trace with padding, so the mask path is not folded away as "all ones"
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
               "token_type_ids": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}  # fmt: skip
    # The tracer's warnings concern control flow that the check against PyTorch covers.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(),
            (ids, mask, torch.zeros_like(ids)),
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def _fuse(model_dir: Path, onnx_file: Path) -> None:
    """Rewrite the graph with ORT's fused BERT operators (Attention, SkipLayerNorm, BiasGelu).

    Measured on MiniLM, 64 chunks of ~240 tokens, one thread: 4.2 CPU s fused against 5.1
    unfused — ORT's own session optimiser does not fuse attention. A model whose graph does
    not match the patterns keeps the unfused graph (what is left still passes `_check`).
    """
    try:
        from onnxruntime.transformers.optimizer import (  # type: ignore[import-untyped]
            optimize_model,
        )

        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        heads, hidden = int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
        # opt_level 0: only the pattern fusions; the session applies its own passes at load.
        fused = optimize_model(
            str(onnx_file), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
        fused.save_model_to_file(str(onnx_file))
    except Exception as exc:  # an unknown layout or an optimiser bug: serve the plain graph
        log.info("ONNX graph of %s left unfused: %s", model_dir, exc)


def _quantize(fp32: Path, target: Path) -> None:
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    # ORT logs a "consider pre-processing" hint on the root logger; shape inference is not
    # needed for dynamic quantisation of MatMul weights.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(fp32),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # The fused operators (com.microsoft domain) defeat ONNX shape inference; their
            # tensors are float, which is all the quantiser needs to know.
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )
    finally:
        root.setLevel(level)


def export_model(model_dir: Path, cache_root: Path, quantize: Quantize = "none") -> Path:
    """The directory holding `model.onnx` (and `model-int8.onnx` when asked), exported now if
    the cache has none for this model's digest. Safe for concurrent processes (a lock file).
    Everything it creates is owner-only, like every store in the home (storage.private_files)."""
    with private_files():
        return _export_model(Path(model_dir), cache_root, quantize)


def _export_model(model_dir: Path, cache_root: Path, quantize: Quantize) -> Path:
    layout = read_layout(model_dir)
    try:
        import onnxruntime  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise ModelUnavailable("onnxruntime is not installed; pip install onnxruntime") from None
    digest = content_digest(model_dir, cache_root)
    out = cache_root / f"{digest[:32]}-v{EXPORT_VERSION}"
    wanted = "model-int8.onnx" if quantize == "int8" else "model.onnx"
    if (out / wanted).is_file():
        return out
    with _locked(cache_root / "export.lock"):
        if (out / wanted).is_file():
            return out
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "model.onnx").is_file():
            log.info("exporting embedding model %s to ONNX (once per model)", model_dir)
            with tempfile.TemporaryDirectory(dir=cache_root) as tmp:
                fp32 = Path(tmp) / "model.onnx"
                try:
                    _export_fp32(model_dir, layout, fp32)
                except Exception as exc:  # torch.onnx raises many kinds for unsupported ops
                    raise ExportRefused(f"torch.onnx could not export {model_dir}: {exc}") from exc
                _fuse(model_dir, fp32)
                _check(model_dir, fp32, layout, MIN_EXPORT_COSINE)
                os.replace(fp32, out / "model.onnx")
            meta = {"model_dir": str(model_dir), "sha256": digest, "opset": OPSET,
                    "pooling": layout.pooling, "max_length": layout.max_length}  # fmt: skip
            (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if quantize == "int8" and not (out / "model-int8.onnx").is_file():
            with tempfile.TemporaryDirectory(dir=cache_root) as tmp:
                q = Path(tmp) / "model-int8.onnx"
                _quantize(out / "model.onnx", q)
                _check(model_dir, q, layout, MIN_INT8_COSINE)
                os.replace(q, out / "model-int8.onnx")
    return out


def _check(model_dir: Path, onnx_file: Path, layout: Layout, floor: float) -> None:
    runner = OnnxRunner(onnx_file, model_dir / "tokenizer.json", layout, threads=1)
    got = runner.encode(CHECK_TEXTS)
    want = _torch_reference(model_dir, CHECK_TEXTS)
    worst = float(np.min(np.sum(got * want, axis=1)))
    if worst < floor:
        raise ExportRefused(
            f"ONNX export of {model_dir} disagrees with PyTorch (cosine {worst:.4f} < {floor})"
        )


class OnnxRunner:
    """One ORT session and a fast tokenizer; encodes a batch as given (no sorting)."""

    def __init__(self, onnx_file: Path, tokenizer_file: Path, layout: Layout, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(onnx_file), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        tok = Tokenizer.from_file(str(tokenizer_file))
        tok.enable_truncation(max_length=layout.max_length)
        tok.no_padding()
        self._tokenizer = tok
        self._tok_lock = threading.Lock()  # a Tokenizer's truncation state is shared

    def encode(self, texts: Sequence[str]) -> Vectors:
        with self._tok_lock:
            encs = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encs):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = e.attention_mask
            types[row, :n] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (out,) = self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        return np.ascontiguousarray(out, dtype=np.float32)


def remove_exports(cache_root: Path) -> None:
    """Forget every cached export (they are rebuilt on demand)."""
    shutil.rmtree(cache_root, ignore_errors=True)
