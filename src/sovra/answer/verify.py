"""After generation: keep only citations to given, supporting chunks, and clean the output.

Output hygiene closes the exfiltration channel of rendered URLs. The text is parsed as Markdown
(markdown-it-py, CommonMark with tables) and every token a renderer would turn into a fetch or a
link is judged: images and raw HTML are removed, links (inline, reference-style, autolinks, bare
URLs) survive only when their host is one the cited sources live on, or when they are quoted
verbatim from a source. A block that holds anything removed is rewritten as escaped text, so no
renderer, however lenient, finds Markdown syntax left in it.

Generated text is checked block by block as it streams (`CheckedStream`): a top-level Markdown
block is final once the next one has begun, so each is checked on its own and only checked text
is ever sent; the concatenation of what was sent is the final answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

from sovra.index.analysis import analyze
from sovra.search.hybrid import SearchHit

_CITATION = re.compile(r"(\s*)\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_CITATION_MARK = re.compile(r"(\[\d{1,3}(?:\s*,\s*\d{1,3})*\])")
_BARE_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>()\]]+")
# What a linkifying client (GFM autolink literals) would turn into a link, any scheme or case.
_LINKIFIABLE = re.compile(r"(?i)(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)[^\s<>]+")
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9-]*)(\s[^<>]*)?/?>")
# Tags a renderer acts on; quoted documents keep other, attribute-free tags (<node-name>).
_ACTIVE_TAGS = frozenset(
    [
        "img",
        "a",
        "script",
        "iframe",
        "frame",
        "style",
        "svg",
        "object",
        "embed",
        "link",
        "meta",
        "form",
        "input",
        "button",
        "video",
        "audio",
        "source",
        "picture",
        "base",
        "image",
        "math",
        "track",
        "area",
        "map",
        "body",
        "html",
        "head",
        "title",
        "template",
    ]
)
# Syntax another renderer may still read as a link, an image or a tag where this parser read
# plain text; a block whose text holds it is rewritten as escaped text.
_SUSPECT_TEXT = re.compile(r"\]\s*[(\[:]|!\[|<[A-Za-z/!?]|\]\s*$")
_ESCAPE = re.compile(r"([\\`*_{}\[\]()<>!|~&#+])")
_CONTAINER = re.compile(
    r"^(?:[ \t]*(?:>|[-*+](?=[ \t])|\d{1,9}[.)](?=[ \t])))*[ \t]*(?:#{1,6}(?=[ \t]|$))?[ \t]*"
)
_SPLIT = re.compile(r"((?<=[.!?\]])\s+|\n+)")
REMOVED_LINK = "[link removed]"
_LEADING_BLANK = re.compile(r"\A(?:[ \t]*\n)+")


class _Parser(MarkdownIt):
    """CommonMark with tables and strikethrough, raw HTML recognised, and every destination
    kept as written: markdown-it would otherwise drop `javascript:` links to literal text (which
    a laxer renderer still links) and percent-encode URLs before they can be judged."""

    def __init__(self) -> None:
        super().__init__("commonmark", {"html": True})
        self.enable(["table", "strikethrough"])

    def validateLink(self, url: str) -> bool:  # noqa: N802 - markdown-it's hook name
        return True

    def normalizeLink(self, url: str) -> str:  # noqa: N802 - markdown-it's hook name
        return url

    def normalizeLinkText(self, link: str) -> str:  # noqa: N802 - markdown-it's hook name
        return link


_MD = _Parser()


@dataclass
class Checked:
    text: str
    cited: list[int]  # source numbers kept, in order of first use
    flags: list[str] = field(default_factory=list)


def allowed_hosts(hits: Sequence[SearchHit]) -> set[str]:
    """Hosts any link may point to: where the given chunks themselves live (their uri)."""
    return {h.lower() for h in (urlsplit(hit.chunk.uri).hostname for hit in hits) if h}


def allowed_urls(hits: Sequence[SearchHit]) -> set[str]:
    """Links quoted verbatim from the given chunks.

    A host merely mentioned in a document is not trusted: an injected document would name its
    own collection host and have the model add the asker's data to the query string. A URL
    copied exactly carries nothing the document did not already say.
    """
    return {url.rstrip(".,;:") for hit in hits for url in _BARE_URL.findall(hit.chunk.text)}


# A URL kept as written must not carry anything a renderer could read as more Markdown.
_PLAIN_URL = re.compile(r"[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]+")


@dataclass(frozen=True)
class LinkRule:
    """Where a link may point: an http(s) URL on one of `hosts`, or exactly one of `urls`."""

    hosts: frozenset[str]
    urls: frozenset[str] = frozenset()
    quoted: bool = False  # extractive quotes keep inert <placeholders>

    @classmethod
    def of(cls, hosts: set[str], urls: set[str] | None = None, *, quoted: bool = False) -> LinkRule:
        return cls(
            frozenset(h.lower() for h in hosts),
            frozenset(u.rstrip(".,;:") for u in urls or ()),
            quoted,
        )

    def allows(self, url: str) -> bool:
        # Browsers read a backslash as a slash and skip control characters; a URL holding
        # either may name another host than the one urlsplit sees, so it is refused.
        if not _PLAIN_URL.fullmatch(url):
            return False
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            return False
        if parts.scheme.lower() not in ("http", "https") or not host:
            return False
        return host in self.hosts or url.rstrip(".,;:") in self.urls


def _linkified(candidate: str) -> str:
    """A bare URL as a linkifying client would take it: trailing punctuation left out."""
    url = candidate.rstrip(".,;:!?*_~'\")]")
    return "http://" + url if url[:4].lower() == "www." else url


def _inert_tag(html: str) -> bool:
    m = _TAG.fullmatch(html.strip())
    return m is not None and not m.group(2) and m.group(1).lower() not in _ACTIVE_TAGS


def _inert_html(html: str) -> bool:
    """Raw HTML of nothing but attribute-free, inactive tags (placeholders like <node-name>)."""
    rest = _TAG.sub(lambda m: "" if _inert_tag(m.group(0)) else "<", html)
    return "<" not in rest


def _inert_block(html: str, rule: LinkRule) -> bool:
    """An HTML block a quote may keep: inert tags only, and no text that could be linked."""
    text = _TAG.sub(" ", html)
    return (
        _inert_html(html)
        and not _SUSPECT_TEXT.search(text)
        and all(rule.allows(_linkified(u)) for u in _LINKIFIABLE.findall(text))
    )


def readable(markdown: str) -> str:
    """A verified answer's Markdown as plain text for a reader (a page, a mail, a ticket):
    the backslash escapes `_escaped` put into quoted source text dropped, nothing else
    changed. Whoever shows the result must still escape it for their medium."""
    return _UNESCAPE.sub(r"\1", markdown)


_UNESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def _escaped(text: str) -> str:
    """`text` with every character Markdown could act on escaped; citation marks stay."""
    return "".join(
        part if i % 2 else _ESCAPE.sub(r"\\\1", part)
        for i, part in enumerate(_CITATION_MARK.split(text))
    )


def _text(text: str, rule: LinkRule, flags: set[str]) -> str:
    out: list[str] = []
    last = 0
    for m in _LINKIFIABLE.finditer(text):
        out.append(_escaped(text[last : m.start()]))
        url = _linkified(m.group(0))
        if rule.allows(url):
            out.append(m.group(0) if _PLAIN_URL.fullmatch(m.group(0)) else _escaped(m.group(0)))
        else:
            flags.add("removed_link")
            out.append(REMOVED_LINK + _escaped(m.group(0)[len(url) :]))
        last = m.end()
    out.append(_escaped(text[last:]))
    return "".join(out)


def _code(content: str) -> str:
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", content)), default=0) + 1)
    pad = " " if content[:1] == "`" or content[-1:] == "`" else ""
    return ticks + pad + content + pad + ticks


def _offending(inline: Token, rule: LinkRule, suspicious: bool) -> bool:
    """Whether an inline run holds anything hygiene removes (or, `suspicious`, syntax another
    renderer might read differently)."""
    for t in inline.children or ():
        if t.type == "image":
            return True
        if t.type == "link_open":
            href = str(t.attrGet("href") or "")
            # A destination written with escapes or entities is rewritten as plain text: a
            # renderer that does not decode them would see another URL (`evil\@docs`).
            if not rule.allows(href) or href not in inline.content:
                return True
        if t.type == "html_inline" and not (rule.quoted and _inert_tag(t.content)):
            return True
        if t.type == "text":
            if any(not rule.allows(_linkified(u)) for u in _LINKIFIABLE.findall(t.content)):
                return True
            if suspicious and _SUSPECT_TEXT.search(t.content):
                return True
    return False


def _plain(children: Sequence[Token] | None, rule: LinkRule, flags: set[str]) -> str:
    """An inline run rewritten as escaped text: allowed links kept, the rest their words."""
    out: list[str] = []
    links: list[tuple[bool, Token]] = []
    for t in children or ():
        kind = t.type
        autolink = bool(links) and links[-1][1].markup == "autolink"
        if kind == "text":
            if not autolink:
                out.append(_text(t.content, rule, flags))
        elif kind == "code_inline":
            out.append(_code(t.content))
        elif kind in ("softbreak", "hardbreak"):
            out.append(" ")
        elif kind == "image":
            flags.add("removed_image")
        elif kind == "html_inline":
            if rule.quoted and _inert_tag(t.content):
                out.append(t.content)
            else:
                flags.add("removed_html")
        elif kind == "link_open":
            ok = rule.allows(str(t.attrGet("href") or ""))
            if not ok:
                flags.add("removed_link")
            links.append((ok, t))
            if ok and t.markup != "autolink":
                out.append("[")
        elif kind == "link_close":
            ok, opened = links.pop() if links else (False, t)
            href = str(opened.attrGet("href") or "")
            if opened.markup == "autolink":
                out.append(f"<{href}>" if ok else REMOVED_LINK)
            elif ok:
                title = str(opened.attrGet("title") or "").replace('"', "'")
                out.append(f"]({href}" + (f' "{_escaped(title)}"' if title else "") + ")")
        elif t.markup and set(t.markup) <= set("*_~"):
            out.append(t.markup)  # emphasis and strikethrough: inert
    text = "".join(out).strip()
    # `[…]:` at the start of a line would be read as a link reference definition.
    return "\\" + text if text.startswith("[") else text


def _lines(text: str) -> list[str]:
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines


def _prefix(line: str, content: str) -> str:
    """The container markers (`> `, `- `, `## `, indent) in front of an inline run's text."""
    core = line.rstrip()
    first = content.split("\n", 1)[0].rstrip()
    if first and core.endswith(first):
        return core[: len(core) - len(first)]
    m = _CONTAINER.match(line)
    return m.group(0) if m else ""


def _clean(text: str, rule: LinkRule, flags: set[str], *, suspicious: bool) -> str:
    """One pass: rewrite every block holding something removed; blank removed HTML blocks and
    reference definitions to other hosts (a blank line keeps the blocks around them apart)."""
    env: dict[str, object] = {}
    tokens = _MD.parse(text, env)
    lines = _lines(text)
    edits: dict[int, tuple[int, str]] = {}

    def blank(span: Sequence[int] | None) -> None:
        if span:
            a, b = span[0], span[1]
            edits[a] = (b, "\n" * (b - a))

    refs = env.get("references")
    for ref in refs.values() if isinstance(refs, dict) else ():
        if not rule.allows(str(ref.get("href", ""))):
            flags.add("removed_link")
            blank(ref.get("map"))
    rows: dict[tuple[int, int], list[Token]] = {}
    for i, tok in enumerate(tokens):
        if tok.type == "html_block" and not (rule.quoted and _inert_block(tok.content, rule)):
            flags.add("removed_html")
            if rule.quoted and tok.map:  # a quote keeps its words, as inert text
                a, b = tok.map[0], tok.map[1]
                edits[a] = (b, "".join(_text(line, rule, flags) for line in lines[a:b]))
            else:
                blank(tok.map)
        elif tok.type == "inline" and tok.map:
            a, b = tok.map[0], tok.map[1]
            if i and tokens[i - 1].type in ("th_open", "td_open"):
                rows.setdefault((a, b), []).append(tok)
            elif _offending(tok, rule, suspicious):
                nl = "\n" if lines[b - 1].endswith("\n") else ""
                plain = _plain(tok.children, rule, flags)
                edits[a] = (b, _prefix(lines[a], tok.content) + plain + nl)
    for (a, b), cells in rows.items():
        if any(_offending(c, rule, suspicious) for c in cells):
            m = re.match(r"(?:[ \t]*>)*[ \t]*", lines[a])
            row = " | ".join(_plain(c.children, rule, flags) for c in cells)
            nl = "\n" if lines[b - 1].endswith("\n") else ""
            edits[a] = (b, (m.group(0) if m else "") + "| " + row + " |" + nl)
    if not edits:
        return text
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in edits:
            stop, replacement = edits[i]
            out.append(replacement)
            i = max(stop, i + 1)
        else:
            out.append(lines[i])
            i += 1
    return "".join(out)


def _normalized(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


def sanitize_with(text: str, rule: LinkRule) -> tuple[str, list[str]]:
    """`text` with images, raw HTML and links `rule` does not allow removed, and the flags."""
    flags: set[str] = set()
    out = _clean(_normalized(text), rule, flags, suspicious=True)
    for _ in range(3):
        again = _clean(out, rule, flags, suspicious=False)
        if again == out:
            return out, sorted(flags)
        out = again
    # A rewrite that keeps producing syntax: give up on Markdown and send inert text.
    return "".join(_escaped(line) for line in _lines(out)), sorted(flags | {"removed_html"})


def sanitize(
    text: str,
    allowed_hosts: set[str],
    *,
    allowed_urls: set[str] | None = None,
    quoted: bool = False,
) -> tuple[str, list[str]]:
    """Remove images, HTML and links other than to `allowed_hosts` or exactly `allowed_urls`;
    `quoted` text (extractive answers) keeps inert <placeholders>."""
    return sanitize_with(text, LinkRule.of(allowed_hosts, allowed_urls, quoted=quoted))


def _supports(sentence: str, hit: SearchHit, language: str) -> bool:
    """A cited chunk supports a sentence when they share content words (cheap, language-aware)."""
    claim = set(analyze(_CITATION.sub("", sentence), language))
    if len(claim) <= 2:
        return True  # too short to judge ("Yes [1].")
    source = set(analyze(hit.chunk.text, hit.chunk.language)) | set(
        analyze(hit.chunk.title, hit.chunk.language)
    )
    return len(claim & source) / len(claim) >= 0.25


def check_citations(text: str, hits: Sequence[SearchHit], language: str) -> Checked:
    """Drop citations that are out of range or that the cited chunk does not support."""
    flags: list[str] = []
    cited: list[int] = []
    pieces: list[str] = []
    for i, sentence in enumerate(_SPLIT.split(text)):
        if i % 2 == 1:  # a separator kept by the capturing split
            pieces.append(sentence)
            continue

        def keep(cm: re.Match[str], sentence: str = sentence) -> str:
            kept = []
            for raw in cm.group(2).split(","):
                n = int(raw)
                if not 1 <= n <= len(hits):
                    flags.append("citation_out_of_range")
                    continue
                if not _supports(sentence, hits[n - 1], language):
                    flags.append("unsupported_citation")
                    continue
                kept.append(n)
                if n not in cited:
                    cited.append(n)
            # A fully removed citation takes its leading space with it ("else [7]." → "else.").
            return cm.group(1) + "".join(f"[{n}]" for n in kept) if kept else ""

        pieces.append(_CITATION.sub(keep, sentence))
    rebuilt = "".join(pieces)
    if rebuilt.strip() and not cited:
        flags.append("no_citations")
    return Checked(rebuilt, cited, sorted(set(flags)))


def _block_starts(text: str) -> list[int]:
    """The lines where top-level Markdown blocks begin (reference definitions begin none)."""
    tokens: list[Token] = []
    _MD.block.parse(text, _MD, {}, tokens)
    return sorted({t.map[0] for t in tokens if t.level == 0 and t.map and t.nesting >= 0})


def _offsets(text: str) -> list[int]:
    """Character offset of each line's start."""
    out = [0]
    for line in _lines(text)[:-1]:
        out.append(out[-1] + len(line))
    return out


class CheckedStream:
    """Generated text checked block by block as it streams.

    `feed` takes raw model text and returns the checked text that may be sent now; `close`
    returns the rest. A top-level block is final once the next has begun (CommonMark decides
    block structure line by line), so each block is checked on its own (hygiene, citations,
    `restore`, e.g. PII placeholders back to originals, then hygiene) and nothing unchecked is ever sent.
    A link reference definition counts with the block before it, so a definition never reaches
    across blocks. The concatenation of all returned text is `text`, the final answer.
    """

    def __init__(
        self,
        hits: Sequence[SearchHit],
        language: str,
        *,
        restore: Callable[[str], str] | None = None,
    ) -> None:
        self.hits = hits
        self.language = language
        self.rule = LinkRule.of(allowed_hosts(hits), allowed_urls(hits))
        self.restore = restore
        self.cited: list[int] = []
        self.flags: set[str] = set()
        self._raw = ""  # unchecked text, starting at a block start
        self._checked = ""
        self._sent = 0

    @property
    def text(self) -> str:
        return _LEADING_BLANK.sub("", self._checked).rstrip()

    def feed(self, piece: str) -> str:
        self._raw += _normalized(piece)
        if not self._checked:
            self._raw = self._raw.lstrip()  # as the answer will be: checked as it is sent
        if "\n" in piece:
            complete = self._raw[: self._raw.rfind("\n") + 1]
            cut = self._check_blocks(complete, keep_last=True)
            self._raw = self._raw[cut:]
        return self._release()

    def close(self) -> str:
        self._check_blocks(self._raw, keep_last=False)
        self._raw = ""
        return self._release()

    def result(self) -> Checked:
        flags = set(self.flags)
        if self.text and not self.cited:
            flags.add("no_citations")
        return Checked(self.text, list(self.cited), sorted(flags))

    def _check_blocks(self, text: str, *, keep_last: bool) -> int:
        """Check each block of `text` (all but the last, which may grow, when `keep_last`);
        returns where the unchecked rest begins."""
        if not text:
            return 0
        offsets = _offsets(text)
        starts = [offsets[n] for n in _block_starts(text) if n > 0] + [len(text)]
        if keep_last:
            starts = starts[:-2] + starts[-2:-1] if len(starts) > 1 else []
        begin = 0
        for end in starts:
            self._check(text[begin:end])
            begin = end
        return begin

    def _check(self, block: str) -> None:
        if not block.strip():
            self._checked += block
            return
        checked = check_citations(block, self.hits, self.language)
        text = self.restore(checked.text) if self.restore else checked.text
        # Hygiene last, on what is shown: nothing a citation's removal or a restored original
        # leaves behind is rendered unchecked.
        clean, flags = sanitize_with(text, self.rule)
        kept = {int(n) for m in _CITATION.finditer(clean) for n in m.group(2).split(",")}
        self.flags.update(flags, set(checked.flags) - {"no_citations"})
        self.cited.extend(n for n in checked.cited if n in kept and n not in self.cited)
        self._checked += clean

    def _release(self) -> str:
        # Only blank lines go: leading spaces may make the first block code.
        body = _LEADING_BLANK.sub("", self._checked)
        end = len(body.rstrip())  # trailing space waits: the answer is stripped at the end
        out = body[self._sent : end]
        self._sent = max(self._sent, end)
        return out


def verify_output(text: str, hits: Sequence[SearchHit], language: str) -> Checked:
    """The checks of `CheckedStream` over a whole text at once."""
    stream = CheckedStream(hits, language)
    stream.feed(text)
    stream.close()
    return stream.result()
