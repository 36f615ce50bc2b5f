"""Extractive answers: the best supporting sentences of the permitted chunks, with citations.

No generation: every word of the answer is quoted from a chunk the asker may read, so it cannot
hallucinate or leak. Sentences are scored by semantic similarity to the question (when the
embedding model covers the question's language), by lexical overlap weighted by how rare a
question term is among the candidates, and by the rank of their chunk in the hybrid search.
Below a calibrated score the answer is "not found" rather than a weak guess.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sovra.answer.sentences import Sentence, split_sentences
from sovra.answer.types import NOT_FOUND, Citation
from sovra.index.analysis import analyze
from sovra.models.base import Embedder
from sovra.search.hybrid import SearchHit


@dataclass(frozen=True)
class ExtractiveSettings:
    max_sentences: int = 3
    max_words: int = 90
    follow_ratio: float = 0.85  # extra sentences must score this close to the best one
    min_score: float = (
        0.45  # below this the question is treated as not answered (calibrated on XQuAD-en)
    )
    min_score_lexical: float = 0.40  # the same with lexical evidence only (calibrated on XQuAD-de)
    semantic_weight: float = 0.55
    lexical_weight: float = 0.35
    rank_weight: float = 0.10
    max_candidates: int = 400
    semantic_candidates: int = 32  # only the best lexical candidates are embedded (CPU budget)


@dataclass(frozen=True)
class ScoredSentence:
    hit_index: int
    sentence: Sentence
    score: float
    semantic: float
    lexical: float


@dataclass
class Extract:
    text: str
    found: bool
    citations: list[Citation]
    best_score: float
    sentences: list[ScoredSentence]


def _lexical_scores(question_terms: list[str], sentence_terms: list[set[str]]) -> list[float]:
    if not question_terms:
        return [0.0] * len(sentence_terms)
    n = len(sentence_terms)
    df = Counter(t for terms in sentence_terms for t in set(question_terms) & terms)
    weights = {t: math.log(1 + (n + 1) / (df.get(t, 0) + 0.5)) for t in set(question_terms)}
    total = sum(weights.values()) or 1.0
    return [sum(w for t, w in weights.items() if t in terms) / total for terms in sentence_terms]


def score_sentences(
    question: str,
    language: str,
    hits: Sequence[SearchHit],
    embedder: Embedder | None,
    use_semantic: bool,
    settings: ExtractiveSettings,
) -> list[ScoredSentence]:
    candidates: list[tuple[int, Sentence]] = []
    for i, hit in enumerate(hits):
        for s in split_sentences(hit.chunk.text):
            candidates.append((i, s))
            if len(candidates) >= settings.max_candidates:
                break
    if not candidates:
        return []
    q_terms = analyze(question, language)
    s_terms = [set(analyze(s.text, hits[i].chunk.language)) for i, s in candidates]
    lexical = _lexical_scores(q_terms, s_terms)
    semantic = [0.0] * len(candidates)
    if use_semantic and embedder is not None:
        # Embedding every sentence of every chunk dominates the cost of an answer; the
        # sentences worth comparing semantically are the lexically plausible ones.
        pre = sorted(
            range(len(candidates)),
            key=lambda j: -(lexical[j] + settings.rank_weight / (1 + candidates[j][0])),
        )[: settings.semantic_candidates]
        vectors = embedder.embed([question] + [candidates[j][1].text for j in pre])
        sims = np.clip(vectors[1:] @ vectors[0], 0.0, 1.0).tolist()
        for j, sim in zip(pre, sims, strict=True):
            semantic[j] = sim
        w_sem, w_lex = settings.semantic_weight, settings.lexical_weight
    else:
        w_sem, w_lex = 0.0, settings.semantic_weight + settings.lexical_weight
    out = []
    for (i, s), sem, lex in zip(candidates, semantic, lexical, strict=True):
        prior = 1.0 / (1 + i)
        score = w_sem * sem + w_lex * lex + settings.rank_weight * prior
        out.append(ScoredSentence(i, s, score, sem, lex))
    out.sort(key=lambda x: -x.score)
    return out


def _overlap(a: str, b: str) -> float:
    ta, tb = set(a.lower().split()), set(b.lower().split())
    return len(ta & tb) / max(1, min(len(ta), len(tb)))


def extract_answer(
    question: str,
    language: str,
    hits: Sequence[SearchHit],
    embedder: Embedder | None,
    *,
    use_semantic: bool = True,
    settings: ExtractiveSettings | None = None,
) -> Extract:
    settings = settings or ExtractiveSettings()
    scored = score_sentences(question, language, hits, embedder, use_semantic, settings)
    semantic = use_semantic and embedder is not None
    threshold = settings.min_score if semantic else settings.min_score_lexical
    if (
        not scored
        or scored[0].score < threshold
        # A sentence sharing no term with the question needs strong semantic evidence.
        or (scored[0].lexical == 0.0 and scored[0].semantic < min(1.0, threshold * 1.5))
    ):
        return Extract(NOT_FOUND, False, [], scored[0].score if scored else 0.0, [])
    best = scored[0]
    chosen = [best]
    words = len(best.sentence.text.split())
    for cand in scored[1:]:
        if len(chosen) >= settings.max_sentences:
            break
        if cand.score < best.score * settings.follow_ratio:
            break
        if any(_overlap(cand.sentence.text, c.sentence.text) > 0.6 for c in chosen):
            continue
        n = len(cand.sentence.text.split())
        if words + n > settings.max_words:
            continue
        chosen.append(cand)
        words += n
    # Read in document order within the best chunks: rank of chunk, then position in it.
    chosen.sort(key=lambda c: (c.hit_index, c.sentence.start))
    numbers: dict[int, int] = {}
    citations: list[Citation] = []
    parts: list[str] = []
    for c in chosen:
        if c.hit_index not in numbers:
            numbers[c.hit_index] = len(numbers) + 1
            chunk = hits[c.hit_index].chunk
            citations.append(
                Citation(
                    number=numbers[c.hit_index],
                    chunk_id=chunk.id,
                    document_id=chunk.document_id,
                    source=chunk.source,
                    title=chunk.title,
                    uri=chunk.uri,
                    heading_path=chunk.heading_path,
                    start=chunk.start + c.sentence.start,
                    end=chunk.start + c.sentence.end,
                    quote=c.sentence.text,
                )
            )
        parts.append(f"{c.sentence.text} [{numbers[c.hit_index]}]")
    return Extract(" ".join(parts), True, citations, best.score, chosen)
