"""Turn the bytes of one file into text with its structure kept as light markdown.

Every format is normalised to the same small markdown dialect — `#` headings, `- ` list
items, `| a | b |` table rows, fenced code, blank-line paragraphs — so that one chunker
(`sovra.ingest.chunk`) understands the structure of every format, and chunk offsets point
into the exact text that is stored and shown.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from sovra.errors import Invalid

PARSER_VERSION = "1"
"""Part of every document version: bump it when parsing output changes, to re-index all."""

FORMATS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}

MIME_TYPES: dict[str, str] = {
    "markdown": "text/markdown",
    "text": "text/plain",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class ParseError(Invalid, ValueError):
    """The bytes are not a readable instance of the format; the message says why."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on ZIP-based formats (DOCX), checked on the archive directory before parsing.

    Python's zipfile never inflates an entry past the size its header declares, so the sum of
    declared sizes bounds what a parser can unpack: a zip bomb is refused without inflating it.
    """

    max_unpacked_bytes: int = 200_000_000
    max_entries: int = 10_000


_DTD_MARKERS = tuple(
    marker.encode(enc)
    for marker in ("<!DOCTYPE", "<!ENTITY")
    for enc in ("ascii", "utf-16-le", "utf-16-be")
)


def check_archive(data: bytes, limits: ArchiveLimits, kind: str) -> zipfile.ZipFile:
    """The archive, once its entry count and declared unpacked size are within `limits`, and
    no XML part declares a DTD (entity expansion bombs, external entities); else ParseError."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise ParseError(f"unreadable {kind}: not a valid ZIP archive ({exc})") from None
    if len(infos) > limits.max_entries:
        raise ParseError(
            f"{kind} archive has {len(infos)} entries, above the limit of {limits.max_entries}"
            " (max_archive_entries)"
        )
    unpacked = sum(i.file_size for i in infos)
    if unpacked > limits.max_unpacked_bytes:
        raise ParseError(
            f"{kind} unpacks to {unpacked} bytes, above the limit of {limits.max_unpacked_bytes}"
            " (max_unpacked_bytes); a zip bomb or an oversized embedded file"
        )
    for info in infos:
        if info.filename.endswith((".xml", ".rels")) and _declares_dtd(archive, info):
            raise ParseError(
                f"{kind} part {info.filename} declares a DTD or entities; refused (XML entity"
                " expansion and external entities are never processed)"
            )
    return archive


def _declares_dtd(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    tail = b""
    try:
        with archive.open(info) as fh:
            while block := fh.read(1 << 16):
                window = tail + block
                if any(m in window for m in _DTD_MARKERS):
                    return True
                tail = window[-32:]
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
        raise ParseError(f"unreadable archive entry {info.filename}: {exc}") from None
    return False


@dataclass
class ParsedText:
    """Normalised text, a title if the file names one, and its front matter (markdown)."""

    text: str
    title: str | None
    mime_type: str
    front_matter: dict[str, Any] = field(default_factory=dict)


def format_of(name: str) -> str | None:
    """The parser name for a file name (by extension), or None if unsupported."""
    dot = name.rfind(".")
    return FORMATS.get(name[dot:].lower()) if dot != -1 else None


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")
_FM_KEY = re.compile(r"^[A-Za-z_][\w-]*[ \t]*:")


def decode_text(data: bytes) -> str:
    """Strict UTF-8 (BOM allowed, UTF-16 with BOM accepted); anything else is an error.

    Guessing a legacy encoding would index mojibake silently; a clear failure tells the
    operator which file to re-save.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return _normalise_newlines(data.decode("utf-16"))
        except UnicodeDecodeError as exc:
            raise ParseError(f"invalid UTF-16 text: {exc.reason}") from None
    if b"\x00" in data[:8192]:
        raise ParseError("binary content (NUL bytes) in a text file; is the extension wrong?")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
    controls = len(_CONTROL.findall(text, 0, 4096))
    if controls > 8 and controls > len(text[:4096]) // 100:
        raise ParseError("binary content (control characters) in a text file")
    return _normalise_newlines(text)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split a leading `---` YAML block off markdown text.

    A leading `---` that is not followed by `key:` is a thematic break, not front matter;
    front matter that starts like YAML but does not parse is an error, because it may hold
    access labels that must not be silently dropped.
    """
    if not text.startswith("---\n"):
        return {}, text
    end = -1
    pos = 4
    for _ in range(500):
        nl = text.find("\n", pos)
        line = text[pos:] if nl == -1 else text[pos:nl]
        if line.rstrip() in ("---", "..."):
            end = pos
            break
        if nl == -1:
            break
        pos = nl + 1
    if end == -1:
        return {}, text
    block = text[4:end]
    first = next((ln for ln in block.split("\n") if ln.strip()), "")
    if not _FM_KEY.match(first):
        return {}, text
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        raise ParseError(f"front matter is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ParseError("front matter is not a mapping of keys to values")
    nl = text.find("\n", end)
    body = "" if nl == -1 else text[nl + 1 :]
    return {str(k): v for k, v in data.items()}, body


def first_heading(text: str) -> str | None:
    m = _HEADING.search(text)
    return m.group(2).strip() if m else None


def parse_markdown(data: bytes) -> ParsedText:
    meta, body = split_front_matter(decode_text(data))
    title = meta.get("title")
    return ParsedText(
        text=body,
        title=str(title).strip() if title else first_heading(body),
        mime_type=MIME_TYPES["markdown"],
        front_matter=meta,
    )


def parse_text(data: bytes) -> ParsedText:
    return ParsedText(text=decode_text(data), title=None, mime_type=MIME_TYPES["text"])


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text.replace("\n", " ")).strip()


def _row(cells: list[str]) -> str:
    # A pipe inside a cell would look like a column break to the chunker and to readers.
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


_HTML_SKIP = frozenset(
    {"script", "style", "noscript", "template", "head", "svg", "canvas", "iframe", "object"}
)
_HTML_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "nav", "aside",
        "blockquote", "address", "figure", "figcaption", "form", "fieldset", "dl", "dt",
        "dd", "hr", "body", "html", "details", "summary", "caption", "center",
    }
)  # fmt: skip


def parse_html(data: bytes) -> ParsedText:
    from bs4 import BeautifulSoup
    from bs4.element import Comment, NavigableString, Tag

    try:
        text = decode_text(data)
    except ParseError as exc:
        if "binary" in str(exc):
            raise
        # HTML often declares a legacy charset; let bs4 honour <meta charset> / sniffing.
        text = ""
    try:
        soup = BeautifulSoup(text or data, "html.parser")
    except Exception as exc:  # bs4 raises assorted types on hostile input
        raise ParseError(f"unreadable HTML: {exc}") from None
    title_tag = soup.find("title")
    title = _clean(title_tag.get_text()) if isinstance(title_tag, Tag) else None
    blocks: list[str] = []

    def flush(inline: list[str]) -> None:
        para = _clean("".join(inline))
        if para:
            blocks.append(para)
        inline.clear()

    def walk(node: Tag, inline: list[str]) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, Comment) and type(child) is NavigableString:
                    inline.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = (child.name or "").lower()
            if name in _HTML_SKIP:
                continue
            if len(name) == 2 and name[0] == "h" and name[1] in "123456":
                flush(inline)
                heading = _clean(child.get_text(" "))
                if heading:
                    blocks.append("#" * int(name[1]) + " " + heading)
            elif name == "table":
                flush(inline)
                for tr in child.find_all("tr"):
                    cells = [_clean(td.get_text(" ")) for td in tr.find_all(["td", "th"])]
                    if any(cells):
                        blocks.append(_row(cells))
            elif name in ("ul", "ol"):
                flush(inline)
                for li in child.find_all("li", recursive=False):
                    item = _clean(li.get_text(" "))
                    if item:
                        blocks.append("- " + item)
            elif name == "pre":
                flush(inline)
                code = child.get_text().strip("\n")
                if code.strip():
                    blocks.append("```\n" + _normalise_newlines(code) + "\n```")
            elif name == "br":
                inline.append(" ")
            elif name in _HTML_BLOCK or name == "li":
                flush(inline)
                walk(child, inline)
                flush(inline)
            else:
                walk(child, inline)

    root = soup.body if isinstance(soup.body, Tag) else soup
    inline: list[str] = []
    walk(root, inline)
    flush(inline)
    # Tables and lists are one block per row/item; keep rows of one table on adjacent lines.
    out: list[str] = []
    for block in blocks:
        if out and (
            (block.startswith("| ") and out[-1].startswith("| "))
            or (block.startswith("- ") and out[-1].startswith("- "))
        ):
            out[-1] += "\n" + block
        else:
            out.append(block)
    body = "\n\n".join(out)
    return ParsedText(text=body, title=title or first_heading(body), mime_type=MIME_TYPES["html"])


def parse_pdf(data: bytes) -> ParsedText:
    from pypdf import PdfReader

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise ParseError("not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ParseError("encrypted PDF; export an unencrypted copy")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta = reader.metadata
        title = meta.title if meta is not None else None
    except ParseError:
        raise
    except Exception as exc:  # pypdf raises many types for a damaged file
        raise ParseError(f"unreadable PDF: {type(exc).__name__}: {exc}") from None
    text = _normalise_newlines("\n\n".join(p for p in pages if p))
    return ParsedText(
        text=text,
        title=str(title).strip() if title else None,
        mime_type=MIME_TYPES["pdf"],
    )


def parse_docx(data: bytes, limits: ArchiveLimits | None = None) -> ParsedText:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    check_archive(data, limits or ArchiveLimits(), "DOCX")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # BadZipFile, KeyError, lxml errors ...
        raise ParseError(f"unreadable DOCX: {type(exc).__name__}: {exc}") from None
    blocks: list[str] = []
    title: str | None = None
    try:
        core_title = document.core_properties.title
        body = document.element.body
        for el in body.iterchildren():
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "p":
                para = Paragraph(el, document)
                text = _clean(para.text)
                if not text:
                    continue
                style = (para.style.name if para.style is not None else "") or ""
                level = 0
                if style == "Title":
                    level = 1
                    title = title or text
                elif style.startswith("Heading"):
                    digits = style[7:].strip()
                    level = int(digits) if digits.isdigit() and 1 <= int(digits) <= 6 else 1
                if level:
                    blocks.append("#" * level + " " + text)
                elif style.startswith("List") or el.find(".//{*}numPr") is not None:
                    blocks.append("- " + text)
                else:
                    blocks.append(text)
            elif tag == "tbl":
                rows: list[str] = []
                for row in Table(el, document).rows:
                    cells: list[str] = []
                    for cell in row.cells:
                        value = _clean(cell.text)
                        # Merged cells repeat; keep one copy so the row reads naturally.
                        if not cells or cells[-1] != value:
                            cells.append(value)
                    if any(cells):
                        rows.append(_row(cells))
                if rows:
                    blocks.append("\n".join(rows))
    except Exception as exc:
        raise ParseError(f"unreadable DOCX content: {type(exc).__name__}: {exc}") from None
    out: list[str] = []
    for block in blocks:
        if out and block.startswith("- ") and out[-1].split("\n")[-1].startswith("- "):
            out[-1] += "\n" + block
        else:
            out.append(block)
    text = "\n\n".join(out)
    return ParsedText(
        text=text,
        title=(core_title or "").strip() or title or first_heading(text),
        mime_type=MIME_TYPES["docx"],
    )


_PARSERS = {
    "markdown": parse_markdown,
    "text": parse_text,
    "html": parse_html,
    "pdf": parse_pdf,
    "docx": parse_docx,
}


def parse_bytes(data: bytes, fmt: str, limits: ArchiveLimits | None = None) -> ParsedText:
    """Parse `data` as `fmt` (a value of FORMATS); raises ParseError for unreadable input.
    `limits` bound ZIP-based formats (default: `ArchiveLimits()`)."""
    try:
        parser = _PARSERS[fmt]
    except KeyError:
        raise ParseError(f"no parser for format {fmt!r}") from None
    try:
        return parse_docx(data, limits) if fmt == "docx" else parser(data)
    except RecursionError:
        # Deeply nested HTML or YAML front matter: the tree builders recurse per level.
        raise ParseError(f"{fmt} nested too deep to read") from None
