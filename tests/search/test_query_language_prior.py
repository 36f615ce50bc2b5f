"""A near-tie in query language detection is broken by what the caller may read, and only then.

Short questions are ambiguous to a 75-language detector; the corpus the caller can read decides
between close candidates (search/language.py `break_tie`). Counting only the caller's readable
chunks keeps chunks they cannot read from shaping how their query is analysed.
"""

from __future__ import annotations

from pathlib import Path

from sovra.domain import SearchFilter
from sovra.index import open_index
from sovra.index.detect import UNDETERMINED, Detection
from sovra.search import Searcher
from sovra.search.language import break_tie, detect_query
from tests.search.test_hybrid import DIM, BagEmbedder, make_chunk

AMBIGUOUS = "how to renew a certificate"  # lingua: en 0.40, it 0.23, ro 0.14 (below 0.5: und)


def test_a_clear_detection_is_never_overruled() -> None:
    """A clear Spanish question over an English-only corpus stays Spanish (searched
    cross-lingually), however large the corpus."""
    spanish = Detection("es", 0.97, "LATIN", (("es", 0.97), ("pt", 0.02), ("en", 0.0001)))
    kept = break_tie(spanish, {"en": 1_000_000, "es": 0, "pt": 0}.__getitem__)
    assert kept.language == "es" and kept.confidence > 0.9


def test_a_weak_short_query_detection_leans_to_the_callers_language() -> None:
    """Italian 0.6 against English 0.3 (a short query's noise) goes to the language the caller
    reads; the same detection over an Italian corpus stays Italian."""
    weak = Detection("it", 0.6, "LATIN", (("it", 0.6), ("en", 0.3), ("ms", 0.05)))
    assert break_tie(weak, {"en": 500, "it": 0, "ms": 0}.__getitem__).language == "en"
    assert break_tie(weak, {"en": 0, "it": 500, "ms": 0}.__getitem__).language == "it"


def test_a_near_tie_goes_to_the_language_the_caller_reads() -> None:
    tie = Detection(UNDETERMINED, 0.4, "LATIN", (("en", 0.40), ("it", 0.30), ("ro", 0.05)))
    english = break_tie(tie, {"en": 500, "it": 0, "ro": 0}.__getitem__)
    assert english.language == "en" and english.confidence >= 0.5
    italian = break_tie(tie, {"en": 0, "it": 500, "ro": 0}.__getitem__)
    assert italian.language == "it"


def test_a_hopeless_detection_stays_undetermined() -> None:
    spread = tuple((lang, 0.06) for lang in ("st", "nn", "la", "so", "tl"))
    d = Detection(UNDETERMINED, 0.06, "LATIN", spread)
    assert break_tie(d, lambda _: 10_000).language == UNDETERMINED


def test_the_query_is_really_ambiguous() -> None:
    d = detect_query(AMBIGUOUS)
    assert d.language == UNDETERMINED
    assert {"en", "it"} <= {lang for lang, _ in d.candidates}


def test_only_readable_chunks_shape_the_query(tmp_path: Path) -> None:
    index = open_index(tmp_path / "idx", dimension=DIM)
    embedder = BagEmbedder(("en",))
    rows = [(f"certificate renewal note {i}", "group:sre", "en") for i in range(12)]
    rows += [(f"rinnovo del certificato nota {i}", "group:it", "it") for i in range(12)]
    vectors = embedder.embed([t for t, _, _ in rows])
    for i, (text, access, lang) in enumerate(rows):
        c = make_chunk(i, text, access, lang)
        c.embedding = vectors[i].tolist()
        index.replace_document(c.document_id, [c])
    searcher = Searcher(index, embedder)
    sre = SearchFilter(access_tokens=frozenset({"group:sre"}))
    italian_team = SearchFilter(access_tokens=frozenset({"group:it"}))
    assert searcher.search(AMBIGUOUS, sre, k=3).language == "en"
    # The Italian chunks the SRE caller cannot read never counted for them; for a caller who
    # reads only those, the same question leans Italian.
    assert searcher.search(AMBIGUOUS, italian_team, k=3).language != "en"
    # A filter narrowed to one language never counts another.
    only_it = SearchFilter(access_tokens=frozenset({"group:sre"}), languages=frozenset({"it"}))
    assert searcher.search(AMBIGUOUS, only_it, k=3).language != "en"
