"""Loaders for the judged retrieval collections in shared/data/eval (Cranfield, NFCorpus, XQuAD)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Collection:
    """Documents, queries and graded judgements of one evaluation run."""

    name: str
    doc_language: str
    query_language: str
    docs: dict[str, tuple[str, str]]  # id → (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # qid → docid → grade > 0
    articles: dict[str, str] = field(default_factory=dict)
    """XQuAD: paragraph id → the id of its article (the document-level eval groups by it)."""


def load_cranfield(root: Path) -> Collection:
    docs: dict[str, tuple[str, str]] = {}
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            docs[str(row["id"])] = (row.get("title", ""), row.get("text", ""))
    raw = (root / "cran.qry").read_text(encoding="utf-8")
    titles = re.findall(r"<title>(.*?)</title>", raw, flags=re.S)
    # The qrels number queries by position in cran.qry (1…225), not by <num>.
    queries = {str(i + 1): " ".join(t.split()) for i, t in enumerate(titles)}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (root / "qrels.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if int(row["score"]) > 0:
                qrels[str(row["qid"])][str(row["docid"])] = int(row["score"])
    return Collection("cranfield", "en", "en", docs, queries, dict(qrels))


def load_nfcorpus(root: Path) -> Collection:
    docs: dict[str, tuple[str, str]] = {}
    with (root / "test.docs").open(encoding="utf-8") as fh:
        for line in fh:
            doc_id, _, text = line.rstrip("\n").partition("\t")
            docs[doc_id] = ("", text)
    queries: dict[str, str] = {}
    with (root / "test.all.queries").open(encoding="utf-8") as fh:
        for line in fh:
            qid, _, text = line.rstrip("\n").partition("\t")
            queries[qid] = text
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (root / "test.3-2-1.qrel").open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 4 and int(parts[3]) > 0:
                qrels[parts[0]][parts[2]] = int(parts[3])
    queries = {q: t for q, t in queries.items() if q in qrels}
    return Collection("nfcorpus", "en", "en", docs, queries, dict(qrels))


def load_xquad(root: Path, query_language: str, doc_language: str) -> Collection:
    """Paragraph retrieval; the question's own paragraph (same position across languages) is relevant."""
    qdata = json.loads((root / f"xquad.{query_language}.json").read_text(encoding="utf-8"))
    ddata = json.loads((root / f"xquad.{doc_language}.json").read_text(encoding="utf-8"))
    docs: dict[str, tuple[str, str]] = {}
    articles: dict[str, str] = {}
    for a, article in enumerate(ddata["data"]):
        for p, para in enumerate(article["paragraphs"]):
            docs[f"{a}-{p}"] = ("", para["context"])
            articles[f"{a}-{p}"] = f"article-{a}"
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for a, article in enumerate(qdata["data"]):
        for p, para in enumerate(article["paragraphs"]):
            for qa in para["qas"]:
                queries[qa["id"]] = qa["question"]
                qrels[qa["id"]] = {f"{a}-{p}": 1}
    name = f"xquad-{query_language}" + (
        f"-{doc_language}" if doc_language != query_language else ""
    )
    return Collection(name, doc_language, query_language, docs, queries, qrels, articles)


def standard_collections(eval_root: Path) -> dict[str, Collection]:
    """Every collection the retrieval evaluation runs, by name."""
    out: dict[str, Collection] = {}
    out["cranfield"] = load_cranfield(eval_root / "cranfield")
    out["nfcorpus"] = load_nfcorpus(eval_root / "nfcorpus")
    root = eval_root / "xquad"
    # Every XQuAD language present: alone (monolingual) and as questions over English paragraphs.
    # Files added to the folder join the run without a code change.
    langs = sorted(p.name.split(".")[1] for p in root.glob("xquad.*.json"))
    langs = ["en", *[lang for lang in langs if lang != "en"]] if "en" in langs else langs
    pairs = [(lang, lang) for lang in langs]
    if "en" in langs:
        pairs += [(lang, "en") for lang in langs if lang != "en"]
    for q, d in pairs:
        c = load_xquad(root, q, d)
        out[c.name] = c
    return out
