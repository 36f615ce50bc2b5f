"""Properties of the structure-aware chunker, checked with hypothesis and on real pages."""

from __future__ import annotations

import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovra.domain import Document
from sovra.ingest.chunk import chunk_document, embedding_text, estimate_tokens, split_text
from tests.support.ingest import COMPANY

WORDS = st.sampled_from(
    [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "etcd",
        "quota",
        "node",
        "pod",
        "disk",
        "leader",
        "vote",
        "grpc",
        "fsync",
        "cluster",
        "the",
        "a",
        "of",
        "to",
        "and",
        "is",
        "in",
        "on",
        "with",
        "policy",
        "leave",
        "benefits",
        "team",
    ]
)


def sentence() -> st.SearchStrategy[str]:
    return st.lists(WORDS, min_size=1, max_size=25).map(lambda ws: " ".join(ws).capitalize() + ".")


paragraph = st.lists(sentence(), min_size=1, max_size=12).map(" ".join)
heading = st.tuples(st.integers(1, 4), st.lists(WORDS, min_size=1, max_size=4)).map(
    lambda t: "#" * t[0] + " " + " ".join(t[1]).title()
)
table = st.lists(
    st.lists(st.lists(WORDS, min_size=1, max_size=6).map(" ".join), min_size=2, max_size=4),
    min_size=2,
    max_size=20,
).map(lambda rows: "\n".join("| " + " | ".join(r) + " |" for r in rows))
bullets = st.lists(
    st.tuples(sentence(), st.one_of(st.none(), sentence())), min_size=1, max_size=12
).map(lambda items: "\n".join(f"- {a}" + (f"\n  {b}" if b else "") for a, b in items))
code = st.lists(st.lists(WORDS, min_size=1, max_size=8).map(" ".join), min_size=1, max_size=15).map(
    lambda lines: "```\n" + "\n".join(lines) + "\n```"
)
block = st.one_of(heading, paragraph, paragraph, table, bullets, code)
document = st.lists(block, min_size=1, max_size=25).map("\n\n".join)


def heading_path_at(text: str, pos: int) -> tuple[str, ...]:
    """Reference: the heading stack in effect at `pos`, ignoring `#` lines inside code."""
    stack: list[tuple[int, str]] = []
    in_code = False
    offset = 0
    for line in text.split("\n"):
        if offset > pos:
            break
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"(#{1,6}) (.+)", line)):
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, m.group(2).strip()))
        offset += len(line) + 1
    return tuple(t for _, t in stack)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document, st.sampled_from([24, 64, 256]))
def test_chunks_cover_text_offsets_exact_rows_whole_headings_right(text: str, target: int) -> None:
    spans = split_text(text, target_tokens=target, overlap_tokens=target // 8)
    assert spans
    covered = bytearray(len(text))
    for s in spans:
        assert 0 <= s.start < s.end <= len(text)
        piece = text[s.start : s.end]
        assert piece == piece.strip()  # offsets land on content, not on padding
        covered[s.start : s.end] = b"\x01" * (s.end - s.start)
        # The heading path is the one in effect where the chunk's body starts.
        body = s.start
        while text.startswith("#", body) and "\n" in text[body : s.end]:
            body = text.index("\n", body) + 1
            while body < s.end and text[body] == "\n":
                body += 1
        assert s.heading_path == heading_path_at(text, body)
    # Every non-blank character is in some chunk.
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))
    # Chunks start in order, never shrink back before the previous start.
    assert [s.start for s in spans] == sorted(s.start for s in spans)
    # No table row or list item is cut: each row line is either wholly inside or outside.
    # (Only a unit above the hard maximum, twice the target, may be cut at whitespace.)
    for m in re.finditer(r"^\| .* \|$|^- .*(?:\n  .*)?", text, re.MULTILINE):
        if estimate_tokens(m.group(0)) > 2 * target:
            continue
        for s in spans:
            inside = s.start < m.end() and m.start() < s.end
            if inside:
                assert s.start <= m.start() and m.end() <= s.end, (
                    m.group(0),
                    text[s.start : s.end],
                )


@settings(max_examples=60, deadline=None)
@given(st.lists(paragraph, min_size=8, max_size=20).map("\n\n".join))
def test_long_sections_split_near_target_with_overlap(text: str) -> None:
    spans = split_text(text, target_tokens=96, overlap_tokens=40)
    if estimate_tokens(text) > 200:
        assert len(spans) > 1
    for s in spans:
        # A sentence is at most 25 words (≈ 33 tokens), so packing stays near the target.
        assert s.tokens <= 96 + 33
    # Sentences are shorter than the overlap budget, so consecutive chunks always share text,
    # and the shared part is whole sentences: the next chunk starts where a sentence starts.
    for a, b in itertools.pairwise(spans):
        assert a.start < b.start < a.end
        assert text[b.start - 2 : b.start] in (". ", "\n\n")


def test_giant_unit_is_cut_at_whitespace() -> None:
    text = "| " + " | ".join(["cell"] * 2000) + " |"
    spans = split_text(text, target_tokens=64)
    assert len(spans) > 10 and all(s.tokens <= 64 * 2 for s in spans)
    assert "".join(text[s.start : s.end] for s in spans).replace(" ", "") == text.replace(" ", "")


def test_heading_only_sections_join_the_next_chunk() -> None:
    text = "# Guide\n\n## Setup\n\n### Linux\n\nInstall the package.\n\n## Empty end"
    spans = split_text(text)
    assert [text[s.start : s.end] for s in spans] == [
        "# Guide\n\n## Setup\n\n### Linux\n\nInstall the package.",
        "## Empty end",
    ]
    assert spans[0].heading_path == ("Guide", "Setup", "Linux")
    assert spans[1].heading_path == ("Guide", "Empty end")


def test_hash_lines_in_code_are_not_headings() -> None:
    text = "# Real\n\n```bash\n# just a comment\necho hi\n```\n\nAfter code."
    spans = split_text(text)
    assert all(s.heading_path == ("Real",) for s in spans)


def test_runbook_chunks_carry_labels_and_context() -> None:
    path = COMPANY / "runbooks/alerts/cluster-etcd-operator/etcdDatabaseQuotaLowSpace.md"
    text = path.read_text(encoding="utf-8")
    doc = Document(
        source="rb", external_id="etcd.md", version="v", title="etcdDatabaseQuotaLowSpace",
        uri=str(path), text=text, access=("group:sre",), classification="internal",
        residency="eu", language="en",
    )  # fmt: skip
    chunks = chunk_document(doc, target_tokens=128)
    assert len(chunks) > 2
    paths = {c.heading_path for c in chunks}
    assert ("etcdDatabaseQuotaLowSpace", "Meaning") in paths
    assert ("etcdDatabaseQuotaLowSpace", "Diagnosis", "CLI Checks") in paths
    # "## Mitigation" has no body of its own: it opens the "### Capacity planning" chunk.
    assert ("etcdDatabaseQuotaLowSpace", "Mitigation", "Capacity planning") in paths
    first = next(c for c in chunks if c.heading_path[-1:] == ("Capacity planning",))
    assert first.text.startswith("## Mitigation")
    for i, c in enumerate(chunks):
        assert c.id == f"rb:etcd.md#{i}" and c.position == i
        assert c.text == text[c.start : c.end]
        assert c.access == ("group:sre",) and c.language == "en"
    assert embedding_text(chunks[1]).startswith("etcdDatabaseQuotaLowSpace > ")


@given(st.text(max_size=300), st.sampled_from([8, 64, 400]))
@settings(max_examples=200, deadline=None)
def test_short_texts_fast_path_agrees_with_full_scan(text: str, target: int) -> None:
    from hypothesis import assume

    assume("#" not in text)
    spans = split_text(text, target_tokens=target)
    if not text.strip():
        assert spans == []
        return
    if len(text) + len(text) // 40 <= target:
        assert len(spans) == 1
        assert text[spans[0].start : spans[0].end] == text.strip()
    # Either way the chunks cover every non-blank character.
    covered = set()
    for s in spans:
        covered.update(range(s.start, s.end))
    assert all(i in covered or text[i].isspace() for i in range(len(text)))
