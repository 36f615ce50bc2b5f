"""Test sets from the customer's own data: question/answer/passage triples for human review.

`sovra eval testset generate --source NAME` samples passages the acting principal may read
(through `Workspace.sample_passages`: the permission filter applies and the sampling is
audited) and turns each into a question with its answer:

- with a generator endpoint (`--endpoint`, or `[answer] endpoint`), the router decides per
  passage whether it may go there (refusals are logged and that passage falls back); the model
  is asked for one question the passage answers and a short answer;
- otherwise by the **extractive heuristic**: the passage's key sentence (the one with most
  content words, 6–40 words long) becomes a cloze question — its key term (the first number,
  else the longest capitalised word not at the start, else the longest word of 5+ letters) is
  blanked out, and that term is the answer. Such questions share words with their passage, so
  retrieval scores on them are optimistic: review and edit them.

A test set inherits the highest classification among its passages (each item keeps its own).
It is a JSONL file `<data dir>/testsets/<name>.jsonl` (owner-only): a header line, then one
item per line with status `pending`, `accepted` or `rejected`. `sovra eval testset review`
sets the status and edits; `sovra eval run --testset NAME` evaluates the accepted items.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sovra.domain import Chunk, ClassificationScale
from sovra.errors import Conflict, Invalid, NotFound
from sovra.index.stopwords import STOP_WORDS
from sovra.storage import atomic_write

Status = Literal["pending", "accepted", "rejected"]
STATUSES: tuple[Status, ...] = ("pending", "accepted", "rejected")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_WORD = re.compile(r"[\w][\w'’-]*", re.UNICODE)
_NUMBER = re.compile(r"^\d[\d.,:/-]*$")

# (question, answer) for a passage, or None when it cannot make one.
QuestionMaker = Callable[[Chunk], tuple[str, str] | None]


@dataclass(frozen=True)
class TestItem:
    id: str
    question: str
    answer: str
    chunk_id: str
    document_id: str
    source: str
    classification: str
    passage: str
    method: str
    status: Status = "pending"
    edited: bool = False


@dataclass
class Testset:
    name: str
    source: str
    classification: str
    created_at: str
    created_by: str
    items: list[TestItem] = field(default_factory=list)

    def header(self) -> dict[str, Any]:
        return {
            "testset": self.name,
            "source": self.source,
            "classification": self.classification,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "items": len(self.items),
        }

    def counts(self) -> dict[str, int]:
        """Items per review status."""
        return {s: sum(1 for i in self.items if i.status == s) for s in STATUSES}

    def accepted(self) -> list[TestItem]:
        return [i for i in self.items if i.status == "accepted"]

    def item(self, item_id: str) -> TestItem:
        for it in self.items:
            if it.id == item_id:
                return it
        raise NotFound(f"test set {self.name!r} has no item {item_id!r}")

    def update(self, item_id: str, **changes: Any) -> TestItem:
        for n, it in enumerate(self.items):
            if it.id == item_id:
                self.items[n] = replace(it, **changes)
                return self.items[n]
        raise NotFound(f"test set {self.name!r} has no item {item_id!r}")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise Invalid(
            f"test set name {name!r}: use lower-case letters, digits, '-' and '_' (max 64)"
        )
    return name


def testset_dir(home: Path) -> Path:
    return home / "testsets"


def testset_path(home: Path, name: str) -> Path:
    return testset_dir(home) / f"{check_name(name)}.jsonl"


def save(home: Path, testset: Testset, *, new: bool = False) -> Path:
    """Write the test set owner-only (all-or-nothing); `new` refuses to replace one."""
    path = testset_path(home, testset.name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = [json.dumps(testset.header(), ensure_ascii=False)]
    lines += [json.dumps(asdict(i), ensure_ascii=False) for i in testset.items]
    try:
        atomic_write(path, "\n".join(lines) + "\n", mode=0o600, exclusive=new)
    except FileExistsError:
        raise Conflict(
            f"test set {testset.name!r} exists ({path}); pick another name or delete the file"
        ) from None
    return path


def load(home: Path, name: str) -> Testset:
    path = testset_path(home, name)
    if not path.is_file():
        known = ", ".join(list_testsets(home)) or "none"
        raise NotFound(f"no test set {name!r} (known: {known}); create it with `testset generate`")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    head = json.loads(lines[0])
    ts = Testset(
        head["testset"],
        head["source"],
        head["classification"],
        head["created_at"],
        head["created_by"],
    )
    ts.items = [TestItem(**json.loads(ln)) for ln in lines[1:]]
    return ts


def list_testsets(home: Path) -> list[str]:
    folder = testset_dir(home)
    return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _stop(language: str) -> frozenset[str]:
    return STOP_WORDS.get(language, STOP_WORDS["en"])


def key_sentence(text: str, language: str = "en") -> str | None:
    """The sentence with most content words among those of 6–40 words (first on a tie)."""
    from sovra.answer.sentences import split_sentences

    stop = _stop(language)
    best: tuple[int, str] | None = None
    for s in split_sentences(text, min_words=6):
        words = _words(s.text)
        if len(words) > 40:
            continue
        score = sum(1 for w in words if w.lower() not in stop)
        if best is None or score > best[0]:
            best = (score, s.text)
    return best[1] if best else None


def key_term(sentence: str, language: str = "en") -> str | None:
    """The first number, else the longest capitalised word not first, else the longest
    word of five or more letters that is not a stop word."""
    stop = _stop(language)
    words = _words(sentence)
    for w in words:
        if _NUMBER.match(w):
            return w
    capitalised = [w for w in words[1:] if w[:1].isupper() and w.lower() not in stop]
    if capitalised:
        return max(capitalised, key=len)
    long = [w for w in words if len(w) >= 5 and w.lower() not in stop]
    return max(long, key=len) if long else None


def cloze_question(chunk: Chunk) -> tuple[str, str] | None:
    """The documented extractive heuristic (module docstring): (cloze question, answer)."""
    sentence = key_sentence(chunk.text, chunk.language)
    if sentence is None:
        return None
    term = key_term(sentence, chunk.language)
    if term is None:
        return None
    blanked = re.sub(rf"(?<!\w){re.escape(term)}(?!\w)", "_____", sentence, count=1)
    return f"Fill in the blank: {blanked}", term


_QA = re.compile(r"Q:\s*(?P<q>.+?)\s*\n+\s*A:\s*(?P<a>.+)", re.S)


def parse_generated(text: str) -> tuple[str, str] | None:
    """`Q: …` / `A: …` from a generator's reply, or None."""
    m = _QA.search(text)
    if not m:
        return None
    question = " ".join(m["q"].split())
    answer = " ".join(m["a"].strip().splitlines()[0].split()) if m["a"].strip() else ""
    return (question, answer) if question and answer else None


def question_prompt(passage: str) -> list[dict[str, str]]:
    return [
        {
            "role": "system",
            "content": "You write evaluation questions. Reply with exactly two lines:"
            " 'Q: <a question this passage answers>' and 'A: <its short answer, copied from"
            " the passage>'.",
        },
        {"role": "user", "content": f"Passage:\n{passage[:3000]}"},
    ]


def build_testset(
    name: str,
    source: str,
    chunks: Sequence[Chunk],
    scale: ClassificationScale,
    *,
    created_by: str,
    makers: Iterable[tuple[str, QuestionMaker]] = (("heuristic", cloze_question),),
    progress: Callable[[int, int], None] | None = None,
) -> Testset:
    """Items for the passages (each maker tried in order until one gives a question); the
    set's classification is the highest of the passages it keeps."""
    check_name(name)
    makers = list(makers)
    ts = Testset(name, source, "", datetime.now(UTC).isoformat(timespec="seconds"), created_by)
    for n, chunk in enumerate(chunks):
        for method, make in makers:
            made = make(chunk)
            if made is not None:
                question, answer = made
                ts.items.append(
                    TestItem(
                        id=f"q{len(ts.items) + 1:03d}",
                        question=question,
                        answer=answer,
                        chunk_id=chunk.id,
                        document_id=chunk.document_id,
                        source=chunk.source,
                        classification=chunk.classification,
                        passage=chunk.text,
                        method=method,
                    )
                )
                break
        if progress:
            progress(n + 1, len(chunks))
    if not ts.items:
        raise Invalid(
            f"no questions could be made from the {len(chunks)} passages sampled from {source!r}"
        )
    ts.classification = max((i.classification for i in ts.items), key=scale.rank)
    return ts
