"""After generation: keep only citations to given, supporting chunks, and clean the output.

Output hygiene closes the exfiltration channel of rendered URLs: markdown images and raw HTML
are removed, and links survive only when their host appears in the cited sources.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

from sovra.index.analysis import analyze
from sovra.search.hybrid import SearchHit

_CITATION = re.compile(r"(\s*)\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_HTML = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
# Quoted documents keep placeholders like <node-name>; only tags a renderer would act on go.
_ACTIVE_HTML = re.compile(
    r"</?(?:img|a|script|iframe|frame|style|svg|object|embed|link|meta|form|input|button|video"
    r"|audio|source|picture|base)\b[^<>]*>",
    re.IGNORECASE,
)
_MD_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_BARE_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>()\]]+")
_SPLIT = re.compile(r"((?<=[.!?\]])\s+|\n+)")


@dataclass
class Checked:
    text: str
    cited: list[int]  # source numbers kept, in order of first use
    flags: list[str] = field(default_factory=list)


def allowed_hosts(hits: Sequence[SearchHit]) -> set[str]:
    """Hosts any link may point to: where the given chunks themselves live (their uri)."""
    return {h for h in (urlparse(hit.chunk.uri).hostname for hit in hits) if h}


def allowed_urls(hits: Sequence[SearchHit]) -> set[str]:
    """Links quoted verbatim from the given chunks.

    A host merely mentioned in a document is not trusted: an injected document would name its
    own collection host and have the model add the asker's data to the query string. A URL
    copied exactly carries nothing the document did not already say.
    """
    return {url.rstrip(".,;:") for hit in hits for url in _BARE_URL.findall(hit.chunk.text)}


def sanitize(
    text: str,
    allowed_hosts: set[str],
    *,
    allowed_urls: set[str] | None = None,
    quoted: bool = False,
) -> tuple[str, list[str]]:
    """Remove images, HTML and links other than to `allowed_hosts` or exactly `allowed_urls`;
    `quoted` text (extractive answers) keeps inert <placeholders>."""
    urls = allowed_urls or set()

    def allowed(url: str) -> bool:
        host = (urlparse(url).hostname or "").lower()
        return bool(host) and (host in allowed_hosts or url.rstrip(".,;:") in urls)

    flags: list[str] = []
    if _IMAGE.search(text):
        flags.append("removed_image")
        text = _IMAGE.sub("", text)
    html = _ACTIVE_HTML if quoted else _HTML
    if html.search(text):
        flags.append("removed_html")
        text = html.sub("", text)

    def link(m: re.Match[str]) -> str:
        if allowed(m.group(2)):
            return m.group(0)
        flags.append("removed_link")
        return m.group(1)

    text = _MD_LINK.sub(link, text)

    def bare(m: re.Match[str]) -> str:
        if allowed(m.group(0)):
            return m.group(0)
        flags.append("removed_link")
        return "[link removed]"

    text = _BARE_URL.sub(bare, text)
    return text, sorted(set(flags))


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


def verify_output(text: str, hits: Sequence[SearchHit], language: str) -> Checked:
    clean, hygiene = sanitize(text, allowed_hosts(hits), allowed_urls=allowed_urls(hits))
    checked = check_citations(clean, hits, language)
    checked.flags = sorted(set(checked.flags) | set(hygiene))
    return checked
