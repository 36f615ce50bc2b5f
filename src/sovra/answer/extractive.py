"""Extractive answers: the best supporting sentences of the permitted chunks, with citations.

No generation: every word of the answer is quoted from a chunk the asker may read, so it cannot
hallucinate or leak. Sentences are scored by semantic similarity to the question (when the
embedding model covers the question's language), by lexical overlap weighted by how rare a
question term is among the candidates, and by the rank of their chunk in the hybrid search.
Below a calibrated score the answer is "not found" rather than a weak guess.

Procedural questions ("what should I do when…", "how do I…", "wie behebe ich…", "¿qué debo
hacer…?") want the steps, not the sentence that best restates the problem: the Impact section
of a runbook often matches the question's words better than its Mitigation section. For them,
sentences in procedural passages (under a Mitigation/Resolution/Steps heading, numbered lists,
imperative instructions) are preferred when they are nearly as relevant, and the answer quotes
that passage whole — list items complete and in document order, with the short command that
follows an instruction — instead of loose sentences.

Languages: the answer quotes sentences in the question's language when a good passage in that
language exists (`same_language_bonus`); a cross-lingual hit (an Arabic question answered from an
English page) is quoted in its own language, never translated, and the answer says so first.
Semantic similarity uses the embedding model that reads the question's language (the
multilingual channel of a fused embedder for a question MiniLM cannot read).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sovra.answer.sentences import (
    Block,
    Sentence,
    SentenceVectorStore,
    Spans,
    clean_inline,
    sentence_spans,
    sentences_of,
    split_blocks,
)
from sovra.answer.types import NOT_FOUND, Citation
from sovra.domain import Chunk
from sovra.index.analysis import analyze, analyze_document
from sovra.index.detect import UNDETERMINED
from sovra.models.base import Embedder, Vectors
from sovra.models.embedding import part_for_language
from sovra.search.hybrid import SearchHit


@dataclass(frozen=True)
class ExtractiveSettings:
    max_sentences: int = 3
    max_words: int = 90
    follow_ratio: float = 0.85  # extra sentences must score this close to the best one
    # Below this the question is treated as not answered: `sovra eval answers --calibrate` on
    # the calibration split, never on the reported one (docs/benchmarks.md).
    min_score: float = 0.47
    min_score_lexical: float = 0.40  # the same with lexical evidence only (calibrated on XQuAD-de)
    semantic_weight: float = 0.55
    lexical_weight: float = 0.35
    rank_weight: float = 0.10
    max_candidates: int = 400
    semantic_candidates: int = 32  # only the best lexical candidates are embedded (CPU budget)
    procedural_weight: float = 0.2  # ranking bonus of procedural text for procedural questions
    procedural_floor: float = 0.75  # ...only for sentences this close to the most relevant one
    context_weight: float = 0.15  # ...and from a document whose title/headings match the question
    max_passages: int = 2
    max_passage_words: int = 130
    same_language_bonus: float = 0.05  # a sentence in the question's own language, when known


# Questions asking what to do. "How many/much/long…" and "how did…" are factual, so "how" only
# counts followed by a modal and a person ("how do I", "wie kann man", "cómo puedo").
_PROCEDURAL_QUESTION = re.compile(
    r"\b(?:what\s+(?:should|shall|do|can|must|could)\s+(?:i|we|you|one)\s+do"
    r"|what\s+to\s+do|how\s+(?:do|can|should|shall|would|could|must)\s+(?:i|we|you|one)\b"
    r"|how\s+to\b|steps?\s+(?:to|for)\b|(?:fix|resolve|mitigate|remediate|troubleshoot)\b"
    # de
    r"|was\s+(?:soll|sollte|muss|kann)\s+(?:ich|man|wir)\s+(?:tun|machen)|was\s+tun"
    r"|wie\s+(?:kann|soll|muss|sollte)\s+(?:ich|man|wir)\b|wie\s+(?:behebe|löse|repariere)"
    r"|(?:beheben|lösen|reparieren)\b"
    # es
    r"|qu[eé]\s+(?:debo|deber[ií]a|debemos|puedo|hago|hay\s+que|tengo\s+que)(?:\s+hacer)?"
    r"|qu[eé]\s+hacer|c[oó]mo\s+(?:puedo|debo|podemos|se\s+puede|se\s+debe|hago|arreglo"
    r"|soluciono|resuelvo)|(?:solucionar|arreglar|mitigar)\b|pasos\s+para)",
    re.IGNORECASE,
)
_PROCEDURAL_HEADING = re.compile(
    r"\b(?:mitigat\w*|resol\w*|remedia\w*|remed\w*|fix\w*|workaround\w*|solution\w*|steps?"
    r"|procedures?|how[\s-]to|instructions?|recover\w*|troubleshoot\w*|what\s+to\s+do|actions?"
    r"|response|playbook|maßnahmen|lösung\w*|behebung|abhilfe|schritte|vorgehen\w*|anleitung"
    r"|wiederherstellung|fehlerbehebung|mitigaci[oó]n|soluci[oó]n\w*|resoluci[oó]n|pasos"
    r"|procedimiento\w*|instrucciones|recuperaci[oó]n)\b",
    re.IGNORECASE,
)
_IMPERATIVE = re.compile(
    r"^(?:please\s+)?(?:run|check|verify|restart|delete|remove|increase|decrease|use|set|add"
    r"|create|ensure|make\s+sure|confirm|update|upgrade|install|apply|scale|drain|cordon"
    r"|uncordon|defrag\w*|compact|contact|escalate|wait|review|inspect|look|log\s+in|ssh"
    r"|execute|edit|change|stop|start|kill|rotate|reboot|free|clean|roll\s*back|collect"
    r"|follow|identify|investigate|monitor|disable|enable|replace|move|back\s+up|restore|try"
    r"|go|navigate|click|select|enter|copy|find|reduce|consider|validate|ask|notify|open"
    r"|resize|expand|migrate|reset|re-?run|re-?create|grant|revoke|attach|detach|mount"
    r"|unmount|patch|annotate|label|describe|get|list|fetch|raise|page|call|file|document"
    r"|ejecute|compruebe|verifique|reinicie|elimine|aumente|utilice|use|revise|aseg[uú]rese"
    r"|abra|contacte|espere|actualice|instale|aplique|cambie|detenga|inicie)\b"
    r"|^\w+(?:en|ern|eln)\s+sie\b",  # de: "Prüfen Sie", "Starten Sie", "Ändern Sie"
    re.IGNORECASE,
)


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[_/]")


def is_procedural_question(question: str) -> bool:
    return bool(_PROCEDURAL_QUESTION.search(question))


def is_procedural_heading(path: Sequence[str]) -> bool:
    """Whether a heading path (below the document title) names steps: Mitigation, Steps, …"""
    return any(_PROCEDURAL_HEADING.search(h) for h in path[1:])


def _heading_path(chunk_path: Sequence[str], block: Block) -> list[str]:
    """The headings a block sits under: the chunk's own path, refined by headings inside it."""
    path = list(chunk_path)
    for level, title in block.headings:
        # The chunk's path holds one title per level (document title first, at level 1).
        path = [*path[: level - 1], title]
    return path


def procedural_score(chunk_path: Sequence[str], block: Block, sentence: str) -> float:
    """How much a sentence reads as an instruction: 1 under a procedural heading, less else."""
    if is_procedural_heading(_heading_path(chunk_path, block)):
        return 1.0
    if block.kind == "numbered":
        return 0.8
    if _IMPERATIVE.match(sentence):
        return 0.7
    return 0.0


@dataclass(frozen=True)
class ScoredSentence:
    hit_index: int
    sentence: Sentence
    score: float  # relevance: decides found / not found
    semantic: float
    lexical: float
    procedural: float = 0.0
    rank_score: float = 0.0  # relevance plus the procedural bonus: decides what is quoted


@dataclass
class Extract:
    text: str
    found: bool
    citations: list[Citation]
    best_score: float
    sentences: list[ScoredSentence]
    top: ScoredSentence | None = None  # the most relevant sentence, found or not (calibration)


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
    query_vectors: Mapping[str, Vectors] | None = None,
    store: SentenceVectorStore | None = None,
) -> list[ScoredSentence]:
    """Candidate sentences of `hits`, best first; `query_vectors` (by model name) are the
    question's embeddings retrieval already computed, so the question is embedded once;
    `store` holds the chunks' sentence vectors, so candidates are looked up, not embedded."""
    procedural_q = is_procedural_question(question)
    candidates: list[tuple[int, Sentence]] = []
    procedural: list[float] = []
    context_terms: list[set[str]] = []
    for i, hit in enumerate(hits):
        c = hit.chunk
        for block, s in sentences_of(split_blocks(c.text), c.text):
            candidates.append((i, s))
            if procedural_q:
                path = _heading_path(c.heading_path, block)
                procedural.append(procedural_score(c.heading_path, block, s.text))
                words = _CAMEL.sub(" ", " ".join([c.title, *path]))
                context_terms.append(set(analyze_document(words, c.language)))
            else:
                procedural.append(0.0)
                context_terms.append(set())
            if len(candidates) >= settings.max_candidates:
                break
    if not candidates:
        return []
    q_terms = analyze(question, language)
    # Index-style terms (stem and word) meet the question's terms whether or not its language
    # was detected (an unsure question is not stemmed).
    s_terms = [set(analyze_document(s.text, hits[i].chunk.language)) for i, s in candidates]
    lexical = _lexical_scores(q_terms, s_terms)
    # Where a sentence stands counts for procedural questions: a step under a heading or in a
    # document named like the problem ("etcdDatabaseQuotaLowSpace") answers it.
    context = _lexical_scores(q_terms, context_terms) if procedural_q else [0.0] * len(lexical)
    semantic = [0.0] * len(candidates)
    if use_semantic and embedder is not None:
        embedder = part_for_language(embedder, language)
        # Embedding every sentence of every chunk dominates the cost of an answer; the
        # sentences worth comparing semantically are the lexically plausible ones.
        pre = sorted(
            range(len(candidates)),
            # Procedural questions also compare the steps of documents named like the problem,
            # which share few words with the question ("reboot the master node").
            key=lambda j: (
                -(
                    lexical[j]
                    + settings.rank_weight / (1 + candidates[j][0])
                    + settings.procedural_weight * procedural[j]
                    + settings.context_weight * context[j]
                )
            ),
        )[: settings.semantic_candidates]
        texts = [candidates[j][1].text for j in pre]
        qvec = (query_vectors or {}).get(embedder.name)
        if qvec is None:
            vectors = embedder.embed([question, *texts])
            qvec, svecs = vectors[0], vectors[1:]
        elif store is not None:
            svecs = _stored_vectors(store, embedder, hits, [candidates[j] for j in pre])
        else:
            svecs = embedder.embed(texts)
        sims = np.clip(svecs @ qvec, 0.0, 1.0).tolist()
        for j, sim in zip(pre, sims, strict=True):
            semantic[j] = sim
        w_sem, w_lex = settings.semantic_weight, settings.lexical_weight
    else:
        w_sem, w_lex = 0.0, settings.semantic_weight + settings.lexical_weight
    out = []
    for (i, s), sem, lex, proc, ctx in zip(
        candidates, semantic, lexical, procedural, context, strict=True
    ):
        prior = 1.0 / (1 + i)
        score = w_sem * sem + w_lex * lex + settings.rank_weight * prior
        if language != UNDETERMINED and hits[i].chunk.language == language:
            score += settings.same_language_bonus
        rank = score + settings.procedural_weight * proc + settings.context_weight * ctx
        out.append(ScoredSentence(i, s, score, sem, lex, proc, rank))
    out.sort(key=lambda x: -x.score)
    return out


def _stored_vectors(
    store: SentenceVectorStore,
    embedder: Embedder,
    hits: Sequence[SearchHit],
    wanted: Sequence[tuple[int, Sentence]],
) -> Vectors:
    """The vectors of `wanted` sentences from the store; a chunk stored without them (an index
    built before sentence vectors, or by another model) gets all its sentences embedded once
    and kept, so the next question about it embeds nothing."""
    chunks = {hits[i].chunk.id: hits[i].chunk for i, _ in wanted}
    stored = store.sentence_vectors(embedder.name, list(chunks.values()))
    missing = [c for cid, c in chunks.items() if cid not in stored]
    stored.update(_embed_sentences(store, embedder, missing))
    rows = []
    for i, s in wanted:
        spans, vecs = stored[hits[i].chunk.id]
        where = np.flatnonzero((spans[:, 0] == s.start) & (spans[:, 1] == s.end))
        rows.append(vecs[where[0]] if len(where) else embedder.embed([s.text])[0])
    return np.asarray(rows, dtype=np.float32).reshape(len(wanted), -1)


_KNOWN_LIMIT = 50_000
"""Sentence vectors remembered across the batches of one fill (~75 MB at 384 dimensions)."""


def _embed_sentences(
    store: SentenceVectorStore,
    embedder: Embedder,
    chunks: Sequence[Chunk],
    known: dict[str, Vectors] | None = None,
) -> dict[str, tuple[Spans, Vectors]]:
    """Cut, embed and store the sentences of `chunks` with `embedder` (one batch).

    Each distinct sentence text is embedded once: chunk overlaps and a folder's boilerplate
    repeat sentences. `known` (text → vector) carries that across the batches of one fill.
    """
    if not chunks:
        return {}
    seen: dict[str, Vectors] = {} if known is None else known
    cut = [sentence_spans(c.text) for c in chunks]
    if len(seen) > _KNOWN_LIMIT:
        seen.clear()  # bounded memory on a huge sync; repeats are mostly near each other
    fresh = list(dict.fromkeys(s.text for found, _ in cut for s in found if s.text not in seen))
    seen.update(zip(fresh, embedder.embed(fresh) if fresh else (), strict=True))
    out: dict[str, tuple[Spans, Vectors]] = {}
    for c, (found, spans) in zip(chunks, cut, strict=True):
        rows = [seen[s.text] for s in found]
        vecs = np.asarray(rows, dtype=np.float32) if rows else np.zeros((0, embedder.dimension))
        out[c.id] = (spans, vecs.astype(np.float32, copy=False))
    store.store_sentence_vectors(embedder.name, [(c, *out[c.id]) for c in chunks])
    return out


def fill_sentence_vectors(
    store: SentenceVectorStore, embedder: Embedder, chunks: Sequence[Chunk], batch: int = 64
) -> int:
    """Store the sentence vectors of `chunks` at ingestion, so no question embeds them.

    Each chunk gets the vectors of the model that reads its language (a fused embedder's part),
    the one a question in that language scores with; other models fill lazily when asked.
    Returns the number of chunks filled.
    """
    by_model: dict[str, tuple[Embedder, list[Chunk]]] = {}
    for c in chunks:
        part = part_for_language(embedder, c.language)
        by_model.setdefault(part.name, (part, []))[1].append(c)
    filled = 0
    for part, todo in by_model.values():
        stored = store.sentence_vectors(part.name, todo)
        todo = [c for c in todo if c.id not in stored]
        known: dict[str, Vectors] = {}
        for at in range(0, len(todo), batch):
            filled += len(_embed_sentences(store, part, todo[at : at + batch], known))
    return filled


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
    query_vectors: Mapping[str, Vectors] | None = None,
    store: SentenceVectorStore | None = None,
) -> Extract:
    settings = settings or ExtractiveSettings()
    scored = score_sentences(
        question, language, hits, embedder, use_semantic, settings, query_vectors, store
    )
    semantic = use_semantic and embedder is not None
    threshold = settings.min_score if semantic else settings.min_score_lexical
    if (
        not scored
        or scored[0].score < threshold
        # A sentence sharing no term with the question needs strong semantic evidence.
        or (scored[0].lexical == 0.0 and scored[0].semantic < min(1.0, threshold * 1.5))
    ):
        top = scored[0] if scored else None
        return Extract(NOT_FOUND, False, [], top.score if top else 0.0, [], top)
    if is_procedural_question(question):
        passage = _procedural_answer(scored, hits, settings)
        if passage is not None:
            passage.top = scored[0]
            note = cross_lingual_note(
                language, [hits[c.hit_index].chunk.language for c in passage.sentences]
            )
            if note:
                passage.text = f"{note}\n\n{passage.text}"
            return passage
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
    note = cross_lingual_note(language, [hits[c.hit_index].chunk.language for c in chosen])
    text = " ".join(parts)
    return Extract(f"{note}\n\n{text}" if note else text, True, citations, best.score, chosen, best)


def _language_name(code: str) -> str:
    from lingua import IsoCode639_1, Language

    try:
        return str(Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())).name).title()
    except (AttributeError, ValueError):
        return code


def cross_lingual_note(question_language: str, passage_languages: Sequence[str]) -> str:
    """A line saying the quotes are in another language than the question, or ""."""
    others = sorted({p for p in passage_languages if p not in (UNDETERMINED, question_language)})
    if question_language == UNDETERMINED or not others:
        return ""
    names = ", ".join(_language_name(p) for p in others)
    return (
        f"(Quoted in {names}, the language of the source; the question was in "
        f"{_language_name(question_language)}. Not translated.)"
    )


@dataclass
class _Passage:
    hit_index: int
    first: int  # block indices in the chunk, inclusive
    last: int
    blocks: list[Block]
    text: str
    words: int


def _render(blocks: Sequence[Block], text: str) -> str:
    lines = []
    number = 0
    for b in blocks:
        body = clean_inline(text[b.start : b.end])
        if b.code:
            body += f" `{b.code}`"
        if b.kind == "numbered":
            number += 1
            body = f"{number}. {body}"
        elif b.kind == "bullet":
            body = f"- {body}"
        lines.append(body)
    listy = any(b.kind in ("numbered", "bullet") for b in blocks)
    return ("\n" if listy else " ").join(lines)


def _passage(hits: Sequence[SearchHit], lead: ScoredSentence, budget: int) -> _Passage | None:
    """The section around `lead` as whole blocks in document order, within `budget` words.

    It starts at the section's first block when that still leaves room for the lead block
    (the introduction of the steps), else at the first item of the lead's list, else at the
    lead block itself; then runs on while whole blocks fit.
    """
    chunk = hits[lead.hit_index].chunk
    blocks = split_blocks(chunk.text)
    i = lead.sentence.block
    if i >= len(blocks):
        return None
    words = [
        len(clean_inline(chunk.text[b.start : b.end]).split()) + len(b.code.split()) for b in blocks
    ]
    first = i
    while first > 0 and blocks[first - 1].headings == blocks[i].headings:
        first -= 1
    if sum(words[first : i + 1]) > budget:
        first = i
        kind = blocks[i].kind
        while (
            kind in ("numbered", "bullet")
            and first > 0
            and blocks[first - 1].kind == kind
            and blocks[first - 1].headings == blocks[i].headings
            and sum(words[first - 1 : i + 1]) <= budget
        ):
            first -= 1
    last = i
    while (
        last + 1 < len(blocks)
        and blocks[last + 1].headings == blocks[i].headings
        and sum(words[first : last + 2]) <= budget
    ):
        last += 1
    chosen = blocks[first : last + 1]
    text = _render(chosen, chunk.text)
    return _Passage(lead.hit_index, first, last, chosen, text, sum(words[first : last + 1]))


def _procedural_answer(
    scored: Sequence[ScoredSentence], hits: Sequence[SearchHit], settings: ExtractiveSettings
) -> Extract | None:
    """Quote the most relevant procedural passage(s) whole, or None to answer as usual."""
    # The document holding the most relevant sentence is about the problem asked; its own
    # step sections answer "what should I do", however few words they share with the question.
    top_doc = hits[scored[0].hit_index].chunk.document_id
    pool = sorted(
        (
            c
            for c in scored
            if c.procedural >= 1.0 and hits[c.hit_index].chunk.document_id == top_doc
        ),
        key=lambda c: -c.rank_score,
    )
    if not pool:
        floor = scored[0].score * settings.procedural_floor
        pool = sorted(
            (c for c in scored if c.procedural > 0 and c.score >= floor),
            key=lambda c: -c.rank_score,
        )
    if not pool:
        return None
    passages: list[_Passage] = []
    used: set[tuple[int, int]] = set()  # (hit, block) already quoted
    budget = settings.max_passage_words
    lead_rank = pool[0].rank_score
    for cand in pool:
        if len(passages) >= settings.max_passages:
            break
        if passages and cand.rank_score < lead_rank * settings.follow_ratio:
            break
        if (cand.hit_index, cand.sentence.block) in used:
            continue
        lead_doc = hits[passages[0].hit_index].chunk.document_id if passages else None
        if (
            lead_doc
            and cand.procedural < 1.0
            and hits[cand.hit_index].chunk.document_id != lead_doc
        ):
            # A second document's passage must be steps by its heading: a numbered list of
            # causes elsewhere is not what was asked.
            continue
        p = _passage(hits, cand, budget)
        if p is None or (passages and p.words > budget):
            continue
        # Two chunks of one document may overlap: never quote the same text twice.
        if any(q.text == p.text or _overlap(q.text, p.text) > 0.6 for q in passages):
            continue
        passages.append(p)
        budget -= p.words
        used.update((p.hit_index, b) for b in range(p.first, p.last + 1))
        if budget <= 0:
            break
    if not passages:
        return None
    # Each passage is its own source [n]: two sections of one chunk are two spans.
    citations: list[Citation] = []
    parts: list[str] = []
    for n, p in enumerate(passages, start=1):
        chunk = hits[p.hit_index].chunk
        end = max(b.code_end or b.end for b in p.blocks)
        citations.append(
            Citation(
                number=n,
                chunk_id=chunk.id,
                document_id=chunk.document_id,
                source=chunk.source,
                title=chunk.title,
                uri=chunk.uri,
                heading_path=tuple(_heading_path(chunk.heading_path, p.blocks[0])),
                start=chunk.start + p.blocks[0].start,
                end=chunk.start + end,
                quote=p.text,
            )
        )
        # A quoted list keeps its lines; the citation goes on a line of its own after it.
        parts.append(f"{p.text}{chr(10) if chr(10) in p.text else ' '}[{n}]")
    chosen = [c for c in scored if (c.hit_index, c.sentence.block) in used]
    return Extract("\n".join(parts), True, citations, scored[0].score, chosen)
