"""The answer path: retrieve under the asker's filter → choose how to answer → answer → verify.

`choose_generation` is the single call site where the endpoint decision is made; the
sovereignty router plugs in there. Nothing else in sovra calls a generator for answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, TypedDict, Unpack

from sovra.answer.extractive import (
    ExtractiveSettings,
    extract_answer,
    is_procedural_heading,
    is_procedural_question,
)
from sovra.answer.prompt import NOT_FOUND_MARKER, build_prompt
from sovra.answer.sentences import SentenceVectorStore
from sovra.answer.types import NOT_FOUND, Answer, Citation
from sovra.answer.verify import CheckedStream, allowed_hosts, allowed_urls, sanitize
from sovra.domain import Chunk, Principal, SearchFilter
from sovra.models.base import Embedder, Vectors
from sovra.models.generation import Generator
from sovra.search.hybrid import Searcher, SearchHit, SearchResult
from sovra.search.language import break_tie, detect_query

if TYPE_CHECKING:
    from sovra.policy.redact import Pseudonyms


@dataclass(frozen=True)
class EndpointInfo:
    """What the answer reports about where it was produced."""

    name: str
    jurisdiction: str = "local"
    hosting: str = "on_prem"


@dataclass(frozen=True)
class GenerationChoice:
    """The decision for one answer: extractive, or this generator at this endpoint."""

    endpoint: EndpointInfo
    generator: Generator | None  # None → extractive
    reason: str = ""
    redact: bool = False  # pseudonymise PII before anything is sent
    pseudonymise: Pseudonymise | None = None  # how, with the router's own PII detector
    decision: dict[str, object] | None = None  # the router's record, as logged
    endpoint_config: object | None = None


EXTRACTIVE = EndpointInfo("extractive")
_MARKER_WINDOW = 40  # a refusal starts with the not-found marker within this many characters
Pseudonymise = Callable[[Sequence[str]], tuple[list[str], "Pseudonyms"]]
"""Texts sent together → their pseudonymised form and the mapping back (kept in process)."""
ChooseGeneration = Callable[
    [str, Principal | None, Sequence[SearchHit], str | None, bool], GenerationChoice
]


@dataclass(frozen=True)
class AnswerSettings:
    k: int = 8
    max_answer_tokens: int = 384
    extractive: ExtractiveSettings = field(default_factory=ExtractiveSettings)


class HowToAnswer(TypedDict, total=False):
    """`Answerer.stream`'s keyword options, shared by `Answerer.ask`."""

    principal: Principal | None
    endpoint: str | None
    extractive: bool
    passages: Sequence[str] | None


@dataclass
class AnswerEvent:
    """Streaming: `delta` text pieces, then one event carrying the final Answer."""

    delta: str = ""
    answer: Answer | None = None


def _citations(hits: Sequence[SearchHit], numbers: Sequence[int]) -> list[Citation]:
    out = []
    for n in numbers:
        c = hits[n - 1].chunk
        out.append(
            Citation(
                n, c.id, c.document_id, c.source, c.title, c.uri, c.heading_path, c.start, c.end
            )
        )
    return out


class Answerer:
    def __init__(
        self,
        searcher: Searcher,
        embedder: Embedder | None,
        choose: ChooseGeneration,
        settings: AnswerSettings | None = None,
    ) -> None:
        self.searcher = searcher
        self.embedder = embedder
        self.choose = choose
        self.settings = settings or AnswerSettings()

    def ask(self, question: str, flt: SearchFilter, **how: Unpack[HowToAnswer]) -> Answer:
        """The final answer of `stream`."""
        final: Answer | None = None
        for event in self.stream(question, flt, **how):
            if event.answer is not None:
                final = event.answer
        assert final is not None
        return final

    def stream(
        self,
        question: str,
        flt: SearchFilter,
        *,
        principal: Principal | None = None,
        endpoint: str | None = None,
        extractive: bool = False,
        query_vectors: dict[str, Vectors] | None = None,
        passages: Sequence[str] | None = None,
    ) -> Iterator[AnswerEvent]:
        """Answer events; `query_vectors`, when given, receives the question's embeddings by
        model name (the caller's drift log reuses them instead of embedding again).
        `passages` (chunk ids, best first) answers from exactly those chunks instead of a new
        search — a workflow drafts from what its retrieve step found."""
        started = time.perf_counter()
        # Retrieval always runs under the asker's filter: never a wider search.
        if passages is not None:
            result = self._given(question, flt, passages)
        else:
            result = self.searcher.search(question, flt, k=self.settings.k)
        if query_vectors is not None:
            query_vectors.update(result.query_vectors)
        hits = result.hits
        choice = self.choose(question, principal, hits, endpoint, extractive)
        if choice.generator is None or not hits:
            if hits and is_procedural_question(question):
                hits = self._with_steps(hits, flt)
            answer = self._extractive(question, result, hits)
            answer.endpoint = choice.endpoint.name
            answer.jurisdiction = choice.endpoint.jurisdiction
            answer.hosting = choice.endpoint.hosting
            if choice.reason:
                answer.flags.append(choice.reason)
            answer.took_ms = (time.perf_counter() - started) * 1000
            yield AnswerEvent(delta=answer.text)
            yield AnswerEvent(answer=answer)
            return
        yield from self._generate(question, result.language, hits, choice, started)

    def _given(self, question: str, flt: SearchFilter, chunk_ids: Sequence[str]) -> SearchResult:
        """`chunk_ids` as search hits in their order, each checked against the asker's filter
        again (a passage found earlier may have become unreadable since)."""
        detection = break_tie(
            detect_query(question), lambda lang: self.searcher._readable_in(lang, flt)
        )
        language = detection.language
        by_document: dict[str, dict[str, Chunk]] = {}
        hits: list[SearchHit] = []
        for chunk_id in chunk_ids:
            document_id = chunk_id.rpartition("#")[0]
            if document_id not in by_document:
                by_document[document_id] = {
                    c.id: c for c in self.searcher.index.chunks_of(document_id)
                }
            chunk = by_document[document_id].get(chunk_id)
            if chunk is not None and flt.admits(chunk):
                hits.append(SearchHit(chunk=chunk, score=1.0 / (1 + len(hits)), rank=len(hits) + 1))
        return SearchResult(
            query=question,
            language=language,
            mode="hybrid",
            vector_weight=self.searcher.vector_weight(language),
            hits=hits,
        )

    def _with_steps(self, hits: list[SearchHit], flt: SearchFilter) -> list[SearchHit]:
        """The best document's procedural sections, when the search did not return them.

        A question like "what should I do when etcd members are down?" matches a runbook's
        Meaning and Impact sections by its words; its Mitigation section says "reboot the
        master node" and ranks nowhere. The best hit's document is one the asker may read, so
        its own step sections join the candidates (each still checked against the filter).
        """
        best = hits[0].chunk.document_id
        have = {h.chunk.id for h in hits}
        if any(
            h.chunk.document_id == best and is_procedural_heading(h.chunk.heading_path)
            for h in hits
        ):
            return hits
        extra = [
            SearchHit(chunk=c, score=0.0, rank=len(hits) + i + 1)
            for i, c in enumerate(
                c
                for c in self.searcher.index.chunks_of(best)
                if c.id not in have and flt.admits(c) and is_procedural_heading(c.heading_path)
            )
        ]
        return hits + extra[:3]

    def _extractive(self, question: str, result: SearchResult, hits: Sequence[SearchHit]) -> Answer:
        language = result.language
        ex = extract_answer(
            question,
            language,
            hits,
            self.embedder,
            use_semantic=result.vector_weight > 0,
            settings=self.settings.extractive,
            query_vectors=result.query_vectors,
            store=index if isinstance(index := self.searcher.index, SentenceVectorStore) else None,
        )
        # Quotes are the document's own words, but a document may carry raw HTML or an image
        # link; the same hygiene as for generated text keeps them from being rendered.
        text, flags = ex.text, list[str]()
        if ex.found:
            text, flags = sanitize(
                ex.text, allowed_hosts(hits), allowed_urls=allowed_urls(hits), quoted=True
            )
        return Answer(
            question=question,
            text=text,
            found=ex.found,
            citations=ex.citations,
            generation="extractive",
            model=self.embedder.name if self.embedder is not None else "bm25",
            language=language,
            flags=flags,
            # Only a found answer's: a not-found score would tell the asker how close the
            # documents they may not read come (tests/answer: not-found is the same either way).
            evidence=round(float(ex.best_score), 4) if ex.found else 0.0,
        )

    def _generate(
        self,
        question: str,
        language: str,
        hits: Sequence[SearchHit],
        choice: GenerationChoice,
        started: float,
    ) -> Iterator[AnswerEvent]:
        gen = choice.generator
        assert gen is not None
        mapping = None
        if choice.redact:
            # Pseudonymise question and sources together so the same person or IBAN gets the
            # same placeholder everywhere; the originals stay in this process only.
            if choice.pseudonymise is None:
                raise RuntimeError("redaction required but no pseudonymiser was wired")
            texts, mapping = choice.pseudonymise([question, *(h.chunk.text for h in hits)])
            question_sent = texts[0]
            hits = [
                replace(h, chunk=replace(h.chunk, text=t))
                for h, t in zip(hits, texts[1:], strict=True)
            ]
        else:
            question_sent = question
        prompt = build_prompt(
            question_sent,
            hits,
            context_tokens=gen.context_length,
            max_answer_tokens=self.settings.max_answer_tokens,
            count_tokens=gen.count_tokens,
        )
        stream = gen.stream(
            prompt.messages, max_tokens=self.settings.max_answer_tokens, stop=("</source>",)
        )
        restore = None
        if mapping is not None:
            from sovra.policy.redact import Redactor

            restore = partial(Redactor.restore, mapping=mapping)
        # Only checked text leaves: the model's deltas go through the same hygiene and
        # citation checks as the final answer, block by block, and the deltas sent add up to
        # exactly the answer's text.
        checker = CheckedStream(prompt.sources, language, restore=restore)
        pieces: list[str] = []
        refused = False
        for piece in stream:
            pieces.append(piece)
            if refused:
                continue
            head = "".join(pieces).lstrip()
            if len(head) < _MARKER_WINDOW:
                continue  # the not-found marker may still be coming
            if len(head) - len(piece) < _MARKER_WINDOW:
                if NOT_FOUND_MARKER in head[:_MARKER_WINDOW]:
                    refused = True
                    continue
                piece = head  # what was held back, now decided
            if out := checker.feed(piece):
                yield AnswerEvent(delta=out)
        raw = "".join(pieces).strip()
        if raw and not refused and NOT_FOUND_MARKER not in raw[:_MARKER_WINDOW]:
            if len(raw) < _MARKER_WINDOW:
                checker.feed(raw)
            if out := checker.close():
                yield AnswerEvent(delta=out)
        checked = checker.result()
        if not checked.text:
            yield AnswerEvent(delta=NOT_FOUND)
        answer = Answer(
            question=question,
            text=checked.text or NOT_FOUND,
            found=bool(checked.text),
            generation="generative",
            endpoint=choice.endpoint.name,
            model=gen.model_id,
            jurisdiction=choice.endpoint.jurisdiction,
            hosting=choice.endpoint.hosting,
            language=language,
            tokens_in=stream.stats.tokens_in,
            tokens_out=stream.stats.tokens_out,
        )
        if prompt.truncated:
            answer.flags.append("context_truncated")
        if checked.text:
            if mapping is not None:
                answer.flags.append("pii_pseudonymised")
            answer.citations = _citations(prompt.sources, checked.cited)
            answer.flags.extend(checked.flags)
            answer.flagged = bool(checked.flags)
        answer.took_ms = (time.perf_counter() - started) * 1000
        yield AnswerEvent(answer=answer)
