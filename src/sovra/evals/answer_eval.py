"""`sovra eval answers`: XQuAD answer quality, citation precision and honest refusals.

For each language, whole articles are held out of the index; their questions are unanswerable
and the system must say "not found". The rest are answerable: exact match and token F1 against
the gold spans (SQuAD normalisation), and citation precision (a cited chunk holds the answer).
Methods: the extractive default, a plain "top-1 chunk" baseline, and optionally a generator.

Two disjoint splits by article, so that the "not found" thresholds are never tuned on the
questions they are reported on: `calibration` (held out: articles 2, 8, 14, …; answerable:
even-numbered articles) picks the thresholds, `report` (held out: 5, 11, 17, …; answerable:
odd-numbered articles) measures them.
"""

from __future__ import annotations

import json
import re
import string
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sovra.answer import EXTRACTIVE, Answer, Answerer, AnswerSettings, GenerationChoice
from sovra.answer.extractive import extract_answer
from sovra.answer.service import EndpointInfo
from sovra.answer.types import NOT_FOUND, Citation
from sovra.domain import PUBLIC, SearchFilter
from sovra.evals.retrieval_eval import Progress, build_eval_index, embed_cached
from sovra.models.base import Embedder
from sovra.models.generation import Generator
from sovra.search import Searcher

_ARTICLES = re.compile(r"\b(a|an|the|der|die|das|ein|eine|el|la|los|las|un|una)\b")
_CITE = re.compile(r"\s*\[\d+\]")


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text.lower())
    text = "".join(ch for ch in text if ch not in set(string.punctuation) | {"¿", "¡", "«", "»"})
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g or same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


@dataclass
class QA:
    qid: str
    question: str
    answers: list[str]
    paragraph: str  # doc id "a-p"


@dataclass
class MethodResult:
    method: str
    answerable: int = 0
    exact_match: float = 0.0
    f1: float = 0.0
    citation_precision: float = 0.0
    answered: int = 0
    unanswerable: int = 0
    refusal_rate: float = 0.0
    ms_per_question: float = 0.0


@dataclass
class LanguageReport:
    language: str
    paragraphs_indexed: int
    held_out_articles: list[int]
    methods: dict[str, MethodResult] = field(default_factory=dict)


# split → (held-out article residue mod 6, parity of the articles whose questions are asked)
SPLITS = {"report": (5, 1), "calibration": (2, 0)}


def load_xquad_qas(
    path: Path, split: str = "report"
) -> tuple[list[tuple[str, str]], list[QA], list[QA], list[int]]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    residue, parity = SPLITS[split]
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    held = [a for a in range(len(data)) if a % 6 == residue]
    paragraphs: list[tuple[str, str]] = []
    answerable: list[QA] = []
    unanswerable: list[QA] = []
    for a, article in enumerate(data):
        for p, para in enumerate(article["paragraphs"]):
            doc = f"{a}-{p}"
            if a not in held:
                paragraphs.append((doc, para["context"]))
            for qa in para["qas"]:
                item = QA(qa["id"], qa["question"], [x["text"] for x in qa["answers"]], doc)
                if a in held:
                    unanswerable.append(item)
                elif a % 2 == parity:
                    answerable.append(item)
    return paragraphs, answerable, unanswerable, held


def _cited_holds_answer(citations: Sequence[Citation], texts: dict[str, str], qa: QA) -> bool:
    golds = [normalize_answer(g) for g in qa.answers]
    for c in citations:
        body = normalize_answer(texts.get(c.uri, ""))
        if any(g and g in body for g in golds):
            return True
    return False


def _top1(question: str, searcher: Searcher, flt: SearchFilter) -> Answer:
    hits = searcher.search(question, flt, k=1).hits
    if not hits:
        return Answer(question, NOT_FOUND, False)
    c = hits[0].chunk
    cite = Citation(1, c.id, c.document_id, c.source, c.title, c.uri, (), c.start, c.end)
    return Answer(question, c.text + " [1]", True, [cite], generation="top1")


def _sample(items: list[QA], n: int | None) -> list[QA]:
    """At most `n` items, every k-th: spread over all articles, the same on every run."""
    if not n:
        return items
    return items[:: max(1, len(items) // n)][:n]


@contextmanager
def _paragraph_search(
    paragraphs: Sequence[tuple[str, str]],
    language: str,
    embedder: Embedder,
    cache_dir: Path | None,
    progress: Progress | None,
) -> Iterator[tuple[Searcher, SearchFilter]]:
    """A throwaway index of the split's paragraphs (all public) and a searcher over it."""
    vectors = embed_cached(
        embedder, [t for _, t in paragraphs], cache_dir, f"xquad-answers-{language}", progress
    )
    with tempfile.TemporaryDirectory(prefix="sovra-answers-") as tmp:
        index = build_eval_index(
            Path(tmp) / "index",
            [(d, "", t) for d, t in paragraphs],
            language,
            vectors,
            embedder.dimension,
        )
        try:
            yield Searcher(index, embedder), SearchFilter(access_tokens=frozenset({PUBLIC}))
        finally:
            index.close()


def evaluate_language(
    xquad_dir: Path,
    language: str,
    embedder: Embedder,
    *,
    generator: Generator | None = None,
    max_questions: int | None = 300,
    max_generated: int = 40,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    min_score: float | None = None,
    min_score_lexical: float | None = None,
    max_answer_tokens: int | None = None,
    split: str = "report",
) -> LanguageReport:
    paragraphs, answerable, unanswerable, held = load_xquad_qas(
        xquad_dir / f"xquad.{language}.json", split
    )
    answerable = _sample(answerable, max_questions)
    unanswerable = _sample(unanswerable, max_questions)
    texts = {d: t for d, t in paragraphs}
    report = LanguageReport(language, len(paragraphs), held)
    settings = AnswerSettings()
    if max_answer_tokens is not None:
        from dataclasses import replace

        settings = replace(settings, max_answer_tokens=max_answer_tokens)
    if min_score is not None or min_score_lexical is not None:
        from dataclasses import replace

        ex = settings.extractive
        settings = replace(
            settings,
            extractive=replace(
                ex,
                min_score=ex.min_score if min_score is None else min_score,
                min_score_lexical=(
                    ex.min_score_lexical if min_score_lexical is None else min_score_lexical
                ),
            ),
        )
    with _paragraph_search(paragraphs, language, embedder, cache_dir, progress) as (searcher, flt):

        def extractive(
            q: str, who: object, hits: object, req: object, ex: object
        ) -> GenerationChoice:
            return GenerationChoice(EXTRACTIVE, None)

        methods: dict[str, Callable[[str], Answer]] = {
            "top1_chunk": lambda q: _top1(q, searcher, flt),
            "extractive": lambda q: Answerer(searcher, embedder, extractive, settings).ask(q, flt),
        }
        if generator is not None:
            gen = generator

            def generative(
                q: str, who: object, hits: object, req: object, ex: object
            ) -> GenerationChoice:
                return GenerationChoice(EndpointInfo("embedded", "local", "on_prem"), gen)

            answerer = Answerer(searcher, embedder, generative, settings)
            methods["generative"] = lambda q: answerer.ask(q, flt)
        for name, run in methods.items():
            res = MethodResult(name)
            limit = max_generated if name == "generative" else None
            qs_a = answerable[:limit] if limit else answerable
            qs_u = unanswerable[:limit] if limit else unanswerable
            started = time.perf_counter()
            em = f1 = cited_ok = 0.0
            for i, qa in enumerate(qs_a):
                ans = run(qa.question)
                if ans.found:
                    res.answered += 1
                    pred = _CITE.sub("", ans.text)
                    em += max(
                        float(normalize_answer(pred) == normalize_answer(g)) for g in qa.answers
                    )
                    f1 += max(token_f1(pred, g) for g in qa.answers)
                    cited_ok += _cited_holds_answer(ans.citations, texts, qa)
                if progress and i % 50 == 0:
                    progress(i + 1, len(qs_a), f"{language} {name}")
            refused = sum(1 for qa in qs_u if not run(qa.question).found)
            total = len(qs_a) + len(qs_u)
            res.answerable = len(qs_a)
            res.exact_match = em / max(len(qs_a), 1)
            res.f1 = f1 / max(len(qs_a), 1)
            res.citation_precision = cited_ok / max(res.answered, 1)
            res.unanswerable = len(qs_u)
            res.refusal_rate = refused / max(len(qs_u), 1)
            res.ms_per_question = (time.perf_counter() - started) * 1000 / max(total, 1)
            report.methods[name] = res
    return report


@dataclass
class CalibrationRow:
    """One calibration question: the extractive answer's top sentence and how good it was."""

    semantic_used: bool
    answerable: bool
    score: float
    lexical: float
    semantic: float
    f1: float  # of the answer given with no threshold (0 when unanswerable)


def found_at(row: CalibrationRow, threshold: float) -> bool:
    """The extractive "found" rule of `extract_answer` at this threshold."""
    if row.score < threshold:
        return False
    return not (row.lexical == 0.0 and row.semantic < min(1.0, threshold * 1.5))


@dataclass
class Threshold:
    threshold: float
    refusal_rate: float  # on the calibration split's unanswerable questions
    f1: float  # on its answerable questions, refusals counted as 0
    answerable: int
    unanswerable: int


def choose_threshold(
    rows: Sequence[CalibrationRow], target_refusal: float = 0.9, margin: float = 0.02
) -> Threshold:
    """The lowest threshold that refuses `target_refusal + margin` of unanswerable questions.

    Lower thresholds answer more (higher F1); the margin leaves room for the report split
    differing from the calibration split.
    """
    ans = [r for r in rows if r.answerable]
    un = [r for r in rows if not r.answerable]
    if not ans or not un:
        raise ValueError("calibration needs answerable and unanswerable questions")
    best: Threshold | None = None
    for step in range(0, 101):
        t = step / 100
        refusal = sum(not found_at(r, t) for r in un) / len(un)
        f1 = sum(r.f1 for r in ans if found_at(r, t)) / len(ans)
        best = Threshold(t, refusal, f1, len(ans), len(un))
        if refusal >= target_refusal + margin:
            break
    assert best is not None
    return best


def calibration_rows(
    xquad_dir: Path,
    language: str,
    embedder: Embedder,
    *,
    max_questions: int | None = 300,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> list[CalibrationRow]:
    """Score every calibration-split question once with no threshold; thresholds are then free
    to try (the answer text does not depend on the threshold, only whether it is given)."""
    from dataclasses import replace

    paragraphs, answerable, unanswerable, _ = load_xquad_qas(
        xquad_dir / f"xquad.{language}.json", "calibration"
    )
    answerable = _sample(answerable, max_questions)
    unanswerable = _sample(unanswerable, max_questions)
    settings = AnswerSettings()
    open_settings = replace(settings.extractive, min_score=0.0, min_score_lexical=0.0)
    rows: list[CalibrationRow] = []
    with _paragraph_search(paragraphs, language, embedder, cache_dir, progress) as (searcher, flt):
        questions = [(qa, True) for qa in answerable] + [(qa, False) for qa in unanswerable]
        for i, (qa, is_answerable) in enumerate(questions):
            result = searcher.search(qa.question, flt, k=settings.k)
            semantic = result.vector_weight > 0
            ex = extract_answer(
                qa.question,
                result.language,
                result.hits,
                embedder,
                use_semantic=semantic,
                settings=open_settings,
            )
            if ex.top is None:
                rows.append(CalibrationRow(semantic, is_answerable, 0.0, 0.0, 0.0, 0.0))
                continue
            pred = _CITE.sub("", ex.text)
            f1 = max(token_f1(pred, g) for g in qa.answers) if is_answerable else 0.0
            rows.append(
                CalibrationRow(
                    semantic,
                    is_answerable,
                    ex.top.score,
                    ex.top.lexical,
                    ex.top.semantic,
                    f1,
                )
            )
            if progress and i % 50 == 0:
                progress(i + 1, len(questions), f"{language} calibration")
    return rows
