"""`sovra eval retrieval`: nDCG@10, Recall@100 and MRR per collection and per method.

Each collection is indexed into a throwaway index through the same Index and Searcher the
product uses (one chunk per judged document, its language detected as ingest does), so the
figures measure the shipped code path. Beside it, `reference` scores an independent BM25 (bm25s
with the Snowball stemmer of the collection's language, or character bigrams for scripts
written without spaces): the bar a proper analyser for that language sets.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sovra.domain import PUBLIC, Chunk, SearchFilter
from sovra.evals.collections import Collection
from sovra.index.base import Index
from sovra.models.base import Embedder, Vectors, WrappedEmbedder
from sovra.models.embedding import FusedEmbedder
from sovra.search import FusionSettings, Searcher
from sovra.search.hybrid import Mode

METHODS: tuple[Mode, ...] = ("text", "vector", "hybrid")
Progress = Callable[[int, int, str], None]


@dataclass
class MethodScores:
    ndcg10: float
    recall100: float
    mrr: float
    queries: int
    ms_per_query: float


@dataclass
class CollectionReport:
    collection: str
    docs: int
    queries: int
    methods: dict[str, MethodScores] = field(default_factory=dict)


def ndcg_at(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], rels: dict[str, int], k: int = 100) -> float:
    return len(set(ranked[:k]) & set(rels)) / len(rels) if rels else 0.0


def reciprocal_rank(ranked: Sequence[str], rels: dict[str, int]) -> float:
    for i, d in enumerate(ranked):
        if d in rels:
            return 1.0 / (i + 1)
    return 0.0


def embed_cached(
    embedder: Embedder,
    texts: list[str],
    cache_dir: Path | None,
    key: str,
    progress: Progress | None,
) -> Vectors:
    """Embeddings of `texts`, cached on disk by model name and content hash."""
    digest = hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()[:16]
    path = cache_dir / f"{key}-{embedder.name}-{digest}.npy" if cache_dir else None
    if path is not None and path.exists():
        cached: Vectors = np.load(path)
        return cached
    batch = 256
    parts: list[Vectors] = []
    for start in range(0, len(texts), batch):
        parts.append(embedder.embed(texts[start : start + batch]))
        if progress:
            progress(min(start + batch, len(texts)), len(texts), f"embedding {key}")
    vectors = np.vstack(parts) if parts else np.zeros((0, embedder.dimension), np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


class _QueryMemo(WrappedEmbedder):
    """An embedder answering from vectors computed in one batch (queries embedded one by one in
    the loop cost several times more and would make the eval a model benchmark)."""

    def __init__(self, inner: Embedder, memo: dict[str, Vectors]) -> None:
        super().__init__(inner)
        self.memo = memo

    def embed(self, texts: Sequence[str]) -> Vectors:
        if all(t in self.memo for t in texts):
            return np.vstack([self.memo[t] for t in texts]).astype(np.float32)
        return self.inner.embed(texts)


def with_query_vectors(
    embedder: Embedder, queries: list[str], cache_dir: Path | None, key: str
) -> Embedder:
    """`embedder` with the vectors of `queries` precomputed (per model of a fused embedder)."""

    def memo(part: Embedder) -> Embedder:
        vectors = embed_cached(part, queries, cache_dir, f"{key}-queries", None)
        return _QueryMemo(part, dict(zip(queries, vectors, strict=True)))

    if isinstance(embedder, FusedEmbedder):
        return FusedEmbedder([memo(p) for p in embedder.parts], routed=embedder.routed)
    return memo(embedder)


@dataclass(frozen=True)
class EvalBackend:
    """The index backend an evaluation builds its throwaway index on (default: embedded).
    For postgres, `schema` must be new: it is created for the run and dropped after it."""

    name: str = "embedded"
    url: str | None = None
    schema: str = "sovra_eval"
    vector_type: str = "vector"
    text_ranking: str = "bm25"


def open_eval_index(path: Path, dimension: int, backend: EvalBackend | None = None) -> Index:
    """A fresh, empty index on `backend` (default: embedded)."""
    from sovra.index import open_index

    if backend is None or backend.name == "embedded":
        return open_index(path, dimension=dimension)
    return open_index(
        path,
        dimension=dimension,
        backend=backend.name,
        url=backend.url,
        schema=backend.schema,
        vector_type=backend.vector_type,
        text_ranking=backend.text_ranking,
    )


def eval_chunk(key: str, position: int, text: str, title: str, language: str) -> Chunk:
    """A public chunk of document `key` (also its uri, which the judgements name)."""
    return Chunk(
        id=f"eval:{key}#{position}",
        document_id=f"eval:{key}",
        source="eval",
        position=position,
        text=text,
        title=title,
        uri=key,
        heading_path=(),
        language=language,
        access=(PUBLIC,),
        classification="public",
        residency="*",
        start=0,
        end=len(text),
    )


def add_chunks(index: Index, chunks: Sequence[Chunk], progress: Progress | None = None) -> None:
    """Index `chunks` (embeddings set), a few hundred documents per write."""
    by_doc: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_doc.setdefault(c.document_id, []).append(c)
    ids = list(by_doc)
    for start in range(0, len(ids), 500):
        index.replace_documents({d: by_doc[d] for d in ids[start : start + 500]})
        if progress:
            progress(min(start + 500, len(ids)), len(ids), "indexing")


def build_eval_index(
    path: Path,
    docs: Sequence[tuple[str, str, str]],
    language: str | Sequence[str],
    vectors: Vectors,
    dimension: int,
    progress: Progress | None = None,
    backend: EvalBackend | None = None,
) -> Index:
    """A fresh index with one public chunk per (id, title, text); the chunk's uri is the id."""
    index = open_eval_index(path, dimension, backend)
    chunks = []
    for i, (doc_id, title, text) in enumerate(docs):
        lang = language if isinstance(language, str) else language[i]
        chunk = eval_chunk(doc_id, 0, text, title, lang)
        chunk.embedding = vectors[i].tolist()
        chunks.append(chunk)
    add_chunks(index, chunks, progress)
    return index


@contextmanager
def throwaway_index(build: Callable[[Path], Index]) -> Iterator[Index]:
    """The index `build` makes at a temporary path, for one evaluation; removed after it."""
    with tempfile.TemporaryDirectory(prefix="sovra-eval-") as tmp:
        index = build(Path(tmp) / "index")
        try:
            yield index
        finally:
            drop = getattr(index, "drop", None)
            if callable(drop):
                drop()  # a throwaway postgres schema: leave nothing behind in the database
            index.close()


REFERENCE = "bm25-ref"
_NO_SPACE_SCRIPTS = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\uac00-\ud7af\uf900-\ufaff]+"
)
_REF_STOPWORDS = {"en": "en", "de": "german", "es": "spanish", "ru": "russian", "fr": "french"}


def _reference_tokens(texts: list[str], language: str) -> list[list[str]]:
    import bm25s
    import Stemmer

    if language in ("zh", "ja", "ko", "th"):
        out = []
        for text in texts:
            toks = [w.lower() for w in re.findall(r"\w+", _NO_SPACE_SCRIPTS.sub(" ", text))]
            for run in _NO_SPACE_SCRIPTS.findall(text):
                toks += [run] if len(run) == 1 else [a + b for a, b in itertools.pairwise(run)]
            out.append(toks)
        return out
    algos = set(Stemmer.algorithms())
    names = {"ar": "arabic", "de": "german", "en": "english", "es": "spanish", "ru": "russian"}
    algo = names.get(language)
    stemmer = Stemmer.Stemmer(algo) if algo in algos else None
    tokens = bm25s.tokenize(
        texts,
        stopwords=_REF_STOPWORDS.get(language, []),
        stemmer=stemmer.stemWords if stemmer else None,
        return_ids=False,
        show_progress=False,
    )
    return [list(t) for t in tokens]


def bm25_reference(
    collection: Collection, qids: Sequence[str], texts: list[str], doc_ids: list[str]
) -> MethodScores:
    """nDCG@10 etc. of plain bm25s with a proper analyser for the collection's language."""
    import bm25s

    started = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(_reference_tokens(texts, collection.doc_language), show_progress=False)
    queries = _reference_tokens([collection.queries[q] for q in qids], collection.query_language)
    ndcg = rec = mrr = 0.0
    k = min(100, len(doc_ids))
    for qid, toks in zip(qids, queries, strict=True):
        ranked: list[str] = []
        if toks:
            found, scores = retriever.retrieve([toks], k=k, show_progress=False)
            ranked = [doc_ids[int(i)] for i, sc in zip(found[0], scores[0], strict=True) if sc > 0]
        rels = collection.qrels[qid]
        ndcg += ndcg_at(ranked, rels)
        rec += recall_at(ranked, rels)
        mrr += reciprocal_rank(ranked, rels)
    q = max(len(qids), 1)
    elapsed = (time.perf_counter() - started) * 1000
    return MethodScores(ndcg / q, rec / q, mrr / q, len(qids), elapsed / q)


def judged_queries(
    queries: dict[str, str], qrels: dict[str, dict[str, int]], limit: int | None
) -> list[str]:
    """Ids of the queries with at least one judged-relevant document, the first `limit`."""
    qids = [q for q in queries if qrels.get(q)]
    return qids[:limit] if limit else qids


def evaluate_collection(
    collection: Collection,
    embedder: Embedder,
    settings: FusionSettings | None = None,
    *,
    methods: Sequence[Mode] = METHODS,
    cache_dir: Path | None = None,
    max_queries: int | None = None,
    progress: Progress | None = None,
    reference: bool = False,
    backend: EvalBackend | None = None,
) -> CollectionReport:
    from sovra.ingest.language import detect_languages

    doc_ids = list(collection.docs)
    texts = [f"{t}\n{x}".strip() for t, x in (collection.docs[d] for d in doc_ids)]
    vectors = embed_cached(embedder, texts, cache_dir, collection.name, progress)
    report = CollectionReport(collection.name, len(doc_ids), 0)
    languages = detect_languages(texts)
    docs = [(d, collection.docs[d][0], t) for d, t in zip(doc_ids, texts, strict=True)]

    def build(path: Path) -> Index:
        return build_eval_index(
            path, docs, languages, vectors, embedder.dimension, progress, backend
        )

    with throwaway_index(build) as index:
        flt = SearchFilter(access_tokens=frozenset({PUBLIC}))
        qids = judged_queries(collection.queries, collection.qrels, max_queries)
        queries = [collection.queries[q] for q in qids]
        searcher = Searcher(
            index, with_query_vectors(embedder, queries, cache_dir, collection.name), settings
        )
        report.queries = len(qids)
        for method in methods:
            ndcg = rec = mrr = 0.0
            started = time.perf_counter()
            for n, qid in enumerate(qids):
                res = searcher.search(collection.queries[qid], flt, k=100, mode=method)
                ranked = [h.chunk.uri for h in res.hits]
                rels = collection.qrels[qid]
                ndcg += ndcg_at(ranked, rels)
                rec += recall_at(ranked, rels)
                mrr += reciprocal_rank(ranked, rels)
                if progress and n % 100 == 0:
                    progress(n + 1, len(qids), f"{collection.name} {method}")
            elapsed = (time.perf_counter() - started) * 1000
            q = max(len(qids), 1)
            report.methods[method] = MethodScores(
                ndcg / q, rec / q, mrr / q, len(qids), elapsed / q
            )
        if reference:
            report.methods[REFERENCE] = bm25_reference(collection, qids, texts, doc_ids)
    return report


@dataclass
class PassageSet:
    """Judged documents as the passages sovra indexes; judgements name documents (by uri)."""

    name: str
    construction: str
    chunks: list[Chunk]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def passage_set(collection: Collection) -> PassageSet:
    """The collection with documents of several passages.

    XQuAD: each article is a document and its paragraphs are its passages (untitled: XQuAD's
    titles are English in every language); a question's relevant document is the article of
    its paragraph. Others: each judged document cut by sovra's own chunker (ingest defaults),
    the judgements kept as they are."""
    from sovra.domain import Document
    from sovra.ingest.chunk import chunk_document
    from sovra.ingest.language import detect_languages

    ids = list(collection.docs)
    languages = detect_languages([f"{t}\n{x}".strip() for t, x in collection.docs.values()])
    chunks: list[Chunk] = []
    if collection.articles:
        article = collection.articles
        seen: dict[str, int] = {}
        for pid, lang in zip(ids, languages, strict=True):
            position = seen[article[pid]] = seen.get(article[pid], -1) + 1
            chunks.append(eval_chunk(article[pid], position, collection.docs[pid][1], "", lang))
        qrels: dict[str, dict[str, int]] = {}
        for qid, rels in collection.qrels.items():
            graded = qrels.setdefault(qid, {})
            for pid, grade in rels.items():
                graded[article[pid]] = max(graded.get(article[pid], 0), grade)
        return PassageSet(
            collection.name, "paragraphs by article", chunks, collection.queries, qrels
        )
    for doc_id, lang in zip(ids, languages, strict=True):
        title, text = collection.docs[doc_id]
        doc = Document(
            source="eval",
            external_id=doc_id,
            version="1",
            title=title,
            uri=doc_id,
            text=text,
            access=(PUBLIC,),
            classification="public",
            residency="*",
            language=lang,
        )
        chunks += chunk_document(doc)
    return PassageSet(
        collection.name, "sovra chunker", chunks, collection.queries, collection.qrels
    )


@dataclass
class DocumentReport:
    """Document-level nDCG@10 on one collection whose documents hold several passages.

    `first_hit`: the hybrid passage ranking cut to each document's first hit; `grouped`: the
    ranking sovra serves (`group_by_document` of search/grouping.py, as
    `Workspace.search_documents` calls it) per (bonus per extra passage, cap). Both rank the
    same `candidate_passages(10)` hybrid hits of each query."""

    collection: str
    construction: str
    documents: int
    passages: int
    multi_passage_documents: int
    queries: int
    first_hit: float = 0.0
    grouped: dict[str, float] = field(default_factory=dict)


def bonus_key(bonus: float, cap: float) -> str:
    return f"bonus {bonus:g} cap {cap:g}"


def evaluate_documents(
    passages: PassageSet,
    embedder: Embedder,
    settings: FusionSettings | None = None,
    *,
    bonuses: Sequence[tuple[float, float]] = (),
    cache_dir: Path | None = None,
    max_queries: int | None = None,
    progress: Progress | None = None,
    backend: EvalBackend | None = None,
) -> DocumentReport:
    """Document-level nDCG@10 of hybrid search: first hit per document, and grouped with each
    (bonus, cap) of `bonuses` (default: the weights sovra ships)."""
    from sovra.ingest.chunk import embedding_text
    from sovra.search.grouping import (
        BONUS_CAP,
        SEVERAL_BONUS,
        candidate_passages,
        group_by_document,
    )

    k = 10
    weights = list(bonuses) or [(SEVERAL_BONUS, BONUS_CAP)]
    chunks = passages.chunks
    texts = [embedding_text(c) for c in chunks]
    vectors = embed_cached(embedder, texts, cache_dir, f"{passages.name}-passages", progress)
    for c, v in zip(chunks, vectors, strict=True):
        c.embedding = v.tolist()
    per_doc: dict[str, int] = {}
    for c in chunks:
        per_doc[c.document_id] = per_doc.get(c.document_id, 0) + 1
    qids = judged_queries(passages.queries, passages.qrels, max_queries)
    report = DocumentReport(
        passages.name,
        passages.construction,
        len(per_doc),
        len(chunks),
        sum(1 for n in per_doc.values() if n > 1),
        len(qids),
    )
    grouped = dict.fromkeys((bonus_key(b, c) for b, c in weights), 0.0)
    with throwaway_index(lambda p: open_eval_index(p, embedder.dimension, backend)) as index:
        add_chunks(index, chunks, progress)
        flt = SearchFilter(access_tokens=frozenset({PUBLIC}))
        queries = [passages.queries[q] for q in qids]
        searcher = Searcher(
            index, with_query_vectors(embedder, queries, cache_dir, passages.name), settings
        )
        for n, qid in enumerate(qids):
            res = searcher.search(
                passages.queries[qid], flt, k=candidate_passages(k), mode="hybrid"
            )
            rels = passages.qrels[qid]
            first = list(dict.fromkeys(h.chunk.uri for h in res.hits))
            report.first_hit += ndcg_at(first, rels, k)
            for bonus, cap in weights:
                docs = group_by_document(res, k=k, bonus=bonus, cap=cap)
                ranked = [d.best.chunk.uri for d in docs]
                grouped[bonus_key(bonus, cap)] += ndcg_at(ranked, rels, k)
            if progress and n % 100 == 0:
                progress(n + 1, len(qids), f"{passages.name} documents")
    q = max(len(qids), 1)
    report.first_hit /= q
    report.grouped = {key: v / q for key, v in grouped.items()}
    return report
