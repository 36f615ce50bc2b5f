"""Parsers keep structure as light markdown; language detection returns ISO 639-1 or `und`."""

from __future__ import annotations

import pytest

from sovra.ingest.language import PREFIX_CHARS, detect_language, detect_languages, prose_sample
from sovra.sources.parse import ParseError, decode_text, parse_bytes, split_front_matter


def test_markdown_front_matter_and_thematic_break() -> None:
    meta, body = split_front_matter("---\ntitle: X\naccess: [public]\n---\n# Body\n")
    assert meta == {"title": "X", "access": ["public"]} and body == "# Body\n"
    # A leading rule followed by prose is not front matter.
    text = "---\nJust a rule, then prose.\n---\nMore.\n"
    assert split_front_matter(text) == ({}, text)
    # A YAML list is not front matter either; it stays text.
    assert split_front_matter("---\n- a: 1\n---\nx\n")[0] == {}
    with pytest.raises(ParseError, match="YAML"):
        split_front_matter("---\ntitle: [open\n---\nx\n")
    parsed = parse_bytes(b"---\ntitle: Given\n---\n# Other\n\ntext\n", "markdown")
    assert parsed.title == "Given" and parsed.text == "# Other\n\ntext\n"


def test_decode_rules() -> None:
    assert decode_text(b"\xef\xbb\xbfhello\r\nworld") == "hello\nworld"
    assert decode_text("h\u00e9".encode("utf-16")) == "h\u00e9"
    with pytest.raises(ParseError, match="NUL"):
        decode_text(b"abc\x00def")
    with pytest.raises(ParseError, match="offset 3"):
        decode_text(b"caf\xe9")


def test_html_nested_lists_pre_and_tables_stay_whole() -> None:
    html = (
        b"<body><nav>Menu</nav><div>Loose <i>inline</i> text<br>next</div>"
        b"<ol><li>first <b>item</b><ul><li>nested</li></ul></li><li>second</li></ol>"
        b"<pre># not a heading\ncode()</pre><table><tr><td>a|b</td><td>c</td></tr></table>"
        b"<!-- comment --><noscript>no</noscript></body>"
    )
    text = parse_bytes(html, "html").text
    assert "Loose inline text next" in text
    assert "- first item nested\n- second" in text
    assert "```\n# not a heading\ncode()\n```" in text
    assert "| a\\|b | c |" in text
    assert "comment" not in text and "no" not in text.split()


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("The etcd database is running out of space and needs to be defragmented soon.", "en"),
        ("Die Datenbank ist fast voll und muss bald defragmentiert werden, bitte prüfen.", "de"),
        ("La base de datos está casi llena y hay que desfragmentarla pronto, por favor.", "es"),
        ("La base de données est presque pleine et doit être défragmentée rapidement.", "fr"),
        ("قاعدة البيانات ممتلئة تقريبا ويجب إلغاء تجزئتها قريبا من فضلك.", "ar"),
        ("De database is bijna vol en moet binnenkort worden gedefragmenteerd.", "nl"),
        ("12345 !!! ---", "und"),
        ("", "und"),
    ],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang
    assert detect_languages([text, text]) == [lang, lang]


def test_detection_ignores_code_and_reads_a_bounded_prefix() -> None:
    german = "Die Datenbank ist fast voll und muss bald defragmentiert werden. " * 3
    text = "```\nthe quick brown fox jumps over the lazy dog and more english words\n```\n" + german
    assert detect_language(text) == "de"
    assert len(prose_sample(german * 1000)) <= PREFIX_CHARS <= 1024


def test_html_legacy_charset_is_honoured_but_binary_is_rejected() -> None:
    latin = '<html><head><meta charset="iso-8859-1"></head><body><p>Caf\xe9</p></body></html>'
    assert parse_bytes(latin.encode("latin-1"), "html").text == "Caf\xe9"
    with pytest.raises(ParseError, match="binary"):
        parse_bytes(b"<html>\x00\x01\x02" * 100, "html")
