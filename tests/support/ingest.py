"""Small stand-ins for the index and the embedder, plus sample-data and file builders.

The fakes implement the real protocols (`Index`, `Embedder`) so the pipeline is tested
against the interface, not against one engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from sovra.config import FolderSource
from sovra.domain import Chunk, ScoredChunk, SearchFilter
from sovra.index.base import Index
from sovra.models.base import Vectors
from sovra.sources import FolderConnector
from tests.support import demo_site

COMPANY = demo_site.COMPANY
if not COMPANY.exists():  # the checkout may sit elsewhere; the data lives next to main/
    COMPANY = Path("/work/shared/data/company")


def copy_tree(src_rel: str, dest: Path, limit: int | None = None) -> list[Path]:
    """Copy markdown files under COMPANY/src_rel into dest (read-only data stays untouched)."""
    src = COMPANY / src_rel
    files = sorted(p for p in src.rglob("*.md") if not any(x.startswith(".") for x in p.parts))
    out = []
    for p in files[:limit]:
        target = dest / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        out.append(target)
    return out


def tickets_head(dest: Path, rows: int = 40) -> Path:
    lines = (COMPANY / "tickets" / "it_tickets.csv").read_text(encoding="utf-8").splitlines()
    target = dest / "tickets.csv"
    target.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    return target


class MemoryIndex:
    """Dict-backed Index; counts writes so tests can see what the pipeline did."""

    def __init__(self) -> None:
        self.docs: dict[str, list[Chunk]] = {}
        self.replace_calls: list[str] = []
        self.delete_calls: list[str] = []
        self.bulk_calls = 0

    def replace_document(self, document_id: str, chunks: Sequence[Chunk]) -> None:
        assert all(c.document_id == document_id for c in chunks)
        assert len({c.id for c in chunks}) == len(chunks)
        self.replace_calls.append(document_id)
        if chunks:
            self.docs[document_id] = list(chunks)
        else:
            self.docs.pop(document_id, None)

    def replace_documents(self, documents: Mapping[str, Sequence[Chunk]]) -> None:
        self.bulk_calls += 1
        for document_id, chunks in documents.items():
            self.replace_document(document_id, chunks)

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        n = 0
        for d in document_ids:
            self.delete_calls.append(d)
            n += len(self.docs.pop(d, []))
        return n

    def search_text(
        self, query: str, language: str, k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        words = set(query.lower().split())
        hits = [
            ScoredChunk(c, float(len(words & set(c.text.lower().split()))), "bm25")
            for c in self.all_chunks()
            if flt.admits(c)
        ]
        return sorted((h for h in hits if h.score > 0), key=lambda h: -h.score)[:k]

    def search_vector(
        self, vector: Sequence[float], k: int, flt: SearchFilter
    ) -> list[ScoredChunk]:
        q = np.asarray(vector, dtype=np.float32)
        hits = [
            ScoredChunk(c, float(np.dot(q, np.asarray(c.embedding))), "vector")
            for c in self.all_chunks()
            if flt.admits(c) and c.embedding is not None
        ]
        return sorted(hits, key=lambda h: -h.score)[:k]

    def count(self, flt: SearchFilter | None = None) -> int:
        return sum(1 for c in self.all_chunks() if flt is None or flt.admits(c))

    def document_ids(self) -> set[str]:
        return set(self.docs)

    def chunks_of(self, document_id: str) -> list[Chunk]:
        return list(self.docs.get(document_id, []))

    def all_chunks(self) -> list[Chunk]:
        return [c for cs in self.docs.values() for c in cs]

    def close(self) -> None:
        pass


class FileIndex(MemoryIndex):
    """Persistent fake: one JSON file per document, replaced atomically (tmp + rename).

    Used by the kill -9 test, where the index must outlive the process. Chunks are stored
    as dicts; `docs` is reloaded from disk on open.
    """

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _file(self, document_id: str) -> Path:
        return self.root / (hashlib.sha256(document_id.encode()).hexdigest() + ".json")

    def replace_document(self, document_id: str, chunks: Sequence[Chunk]) -> None:
        super().replace_document(document_id, chunks)
        path = self._file(document_id)
        if not chunks:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "document_id": document_id,
                    "chunks": [
                        {"id": c.id, "text": c.text, "start": c.start, "end": c.end} for c in chunks
                    ],
                }
            )
        )
        os.replace(tmp, path)

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        ids = list(document_ids)
        for d in ids:
            self._file(d).unlink(missing_ok=True)
        return super().delete_documents(ids)

    def stored(self) -> dict[str, list[dict[str, object]]]:
        out: dict[str, list[dict[str, object]]] = {}
        for p in self.root.glob("*.json"):
            data = json.loads(p.read_text())
            out[data["document_id"]] = data["chunks"]
        return out

    def document_ids(self) -> set[str]:
        return set(self.stored())


class FakeEmbedder:
    """Deterministic unit vectors from a hash of the text; optionally slow, to be killed."""

    def __init__(self, dimension: int = 16, delay: float = 0.0) -> None:
        self._dim = dimension
        self.delay = delay
        self.calls = 0
        self.texts = 0

    @property
    def name(self) -> str:
        return "fake"

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def languages(self) -> frozenset[str]:
        return frozenset({"en"})

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        self.texts += len(texts)
        if self.delay:
            time.sleep(self.delay)
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(zlib.crc32(t.encode()))
            v = rng.standard_normal(self._dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


def minimal_pdf(lines: Sequence[str], title: str | None = None) -> bytes:
    """A valid one-page PDF with text in Helvetica, built by hand (no PDF writer installed)."""
    content = (
        "BT /F1 12 Tf 72 720 Td 14 TL "
        + " ".join(
            "(" + ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '"
            for ln in lines
        )
        + " ET"
    )
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title:
        objs.append(f"<< /Title ({title}) >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    info = f" /Info {len(objs)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# -- the kill test's sync, set up alike in the test and in its worker process ----------------
DIMENSION = 16


def connector(root: Path) -> FolderConnector:
    src = FolderSource.model_validate(
        {"name": "hb", "kind": "folder", "path": root, "access": ["group:staff"]}
    )
    return FolderConnector(src, root)


def open_index(kind: str, path: Path) -> Index:
    """`embedded` opens sovra's embedded index, anything else the JSON-file fake."""
    if kind == "embedded":
        from sovra.index import open_index as open_real

        return open_real(path, dimension=DIMENSION)
    return FileIndex(path)
