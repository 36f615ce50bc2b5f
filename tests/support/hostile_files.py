"""Generator of corrupt and hostile files for the hostile-files suite, beside valid ones.

`generate(root)` writes a folder source (`root/folder`), a CSV and a JSONL records source
(`root/records.csv`, `root/records.jsonl`) and something secret outside the sources
(`root/outside`), and returns a `Manifest`: every generated item with its category and what a
sync must make of it:

* `fail`   — recorded as failed with a reason (malformed, encrypted, bomb, binary, ...);
* `index`  — indexed; its marker word is searchable;
* `either` — odd but legitimate (huge single line, deep headings): indexed or failed with a
  reason, never a crash;
* `link`   — a symbolic link out of the root: not followed, listed in the report's refused links;
* `skip`   — not a document at all (a FIFO): neither indexed nor fatal.

Everything is deterministic (seeded); the big inputs (a zip bomb, a 10⁶-line CSV export, a
49 MB single line) are written once, streamed, so the generator itself stays small in memory.
"""

from __future__ import annotations

import io
import json
import os
import random
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import docx
from pypdf import PdfReader, PdfWriter

from tests.support.ingest import minimal_pdf

SECRET = "exfiltratedsecretword"
"""Only in files outside the sources; must never be searchable."""

VALID_MARKER = "validmarker"
"""Valid item i carries the word f"{VALID_MARKER}{i}" (searchable after the sync)."""


@dataclass
class Manifest:
    folder: Path
    csv: Path
    jsonl: Path
    expect: dict[str, str] = field(default_factory=dict)  # folder rel path → expectation
    category: dict[str, str] = field(default_factory=dict)  # folder rel path → category
    valid_markers: dict[str, str] = field(default_factory=dict)  # rel path → marker
    records_expect: dict[str, dict[str, str]] = field(default_factory=dict)  # source → id → exp

    @property
    def hostile_count(self) -> int:
        hostile = sum(1 for e in self.expect.values() if e != "index")
        return hostile + sum(
            1 for exp in self.records_expect.values() for e in exp.values() if e != "index"
        )

    def counts(self) -> Counter[str]:
        return Counter(self.category.values())


class _Writer:
    def __init__(self, manifest: Manifest, rng: random.Random) -> None:
        self.m = manifest
        self.rng = rng

    def put(self, rel: str, data: bytes, category: str, expect: str) -> None:
        path = self.m.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.note(rel, category, expect)

    def note(self, rel: str, category: str, expect: str) -> None:
        assert rel not in self.m.expect, rel
        self.m.expect[rel] = expect
        self.m.category[rel] = category

    def junk(self, n: int) -> bytes:
        return self.rng.randbytes(n)


def _docx_bytes(paragraphs: list[str], heading: str | None = None) -> bytes:
    d = docx.Document()
    if heading:
        d.add_heading(heading, level=1)
    for p in paragraphs:
        d.add_paragraph(p)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _rezip(data: bytes, replace: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            zf.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
        for name, body in (extra or {}).items():
            zf.writestr(name, body)
    return out.getvalue()


def _zip_bomb(base: bytes, unpacked_mb: int) -> bytes:
    """A valid DOCX plus one entry of `unpacked_mb` MiB of zeros (about 1 MB on disk)."""
    src = zipfile.ZipFile(io.BytesIO(base))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for info in src.infolist():
            zf.writestr(info.filename, src.read(info.filename))
        with zf.open("word/media/image1.bin", "w", force_zip64=True) as fh:
            block = b"\0" * (1 << 20)
            for _ in range(unpacked_mb):
                fh.write(block)
    return out.getvalue()


_ENTITY_DECLS = [
    # billion laughs
    '<!ENTITY a "haha">'
    + "".join(
        f'<!ENTITY {c} "{("&" + p + ";") * 10}">'
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]>",
    # quadratic blowup: one big entity referenced many times
    '<!ENTITY big "' + "A" * 50_000 + '">]>',
    # external entity (local file disclosure) and a network fetch
    '<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!ENTITY xxe SYSTEM "http://127.0.0.1:9/steal">]>',
    # parameter entities
    '<!ENTITY % p SYSTEM "file:///etc/hostname"> %p;]>',
]
_ENTITY_REFS = ["&i;", "&big;" * 2000, "&xxe;", "&xxe;", "text"]


def _entity_xml(variant: int, encoding: str) -> bytes:
    decl = _ENTITY_DECLS[variant % len(_ENTITY_DECLS)]
    ref = _ENTITY_REFS[variant % len(_ENTITY_REFS)]
    xml = (
        f'<?xml version="1.0" encoding="{encoding.upper()}" standalone="yes"?>\n'
        f"<!DOCTYPE w:document [{decl}\n"
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body><w:p><w:r><w:t>{ref}</w:t></w:r></w:p></w:body></w:document>"
    )
    return xml.encode(encoding)


def _encrypted_pdf(text: str) -> bytes:
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(minimal_pdf([text]))).pages:
        writer.add_page(page)
    writer.encrypt("", owner_password="owner", algorithm="RC4-128")  # empty user password
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _pdf_with_stream(stream: bytes, filter_name: str = "/FlateDecode") -> bytes:
    """A one-page PDF whose content stream is `stream` (already encoded)."""
    out = bytearray(b"%PDF-1.4\n")
    objs: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        f"<< /Length {len(stream)} /Filter {filter_name} >>\nstream\n".encode()
        + stream
        + b"\nendstream",
    ]
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _flate_zeros(mb: int) -> bytes:
    comp = zlib.compressobj(1)
    block = b"0 " * (1 << 19)
    parts = [comp.compress(block) for _ in range(mb)]
    parts.append(comp.flush())
    return b"".join(parts)


def _valid(w: _Writer) -> None:
    m = w.m
    i = 0

    def marker() -> str:
        nonlocal i
        i += 1
        return f"{VALID_MARKER}{i}"

    for n in range(12):
        word = marker()
        rel = f"valid/notes-{n}.md"
        w.put(
            rel,
            f"# Valid note {n}\n\nThe rota for week {n} mentions {word} and the on-call.\n".encode(),
            "valid",
            "index",
        )
        m.valid_markers[rel] = word
    for n in range(3):
        word = marker()
        rel = f"valid/report-{n}.pdf"
        w.put(
            rel, minimal_pdf([f"Quarterly report {n}", f"Keyword {word} here."]), "valid", "index"
        )
        m.valid_markers[rel] = word
        word = marker()
        rel = f"valid/memo-{n}.docx"
        w.put(rel, _docx_bytes([f"Memo {n} about {word} and budgets."], "Memo"), "valid", "index")
        m.valid_markers[rel] = word
        word = marker()
        rel = f"valid/page-{n}.html"
        html = f"<html><head><title>P{n}</title></head><body><h1>Page</h1><p>{word}</p></body>"
        w.put(rel, html.encode(), "valid", "index")
        m.valid_markers[rel] = word
        word = marker()
        rel = f"valid/plain-{n}.txt"
        w.put(rel, f"Plain text {n} with {word} inside.\n".encode(), "valid", "index")
        m.valid_markers[rel] = word


def _pdfs(w: _Writer) -> None:
    base = minimal_pdf(["A perfectly fine line", "and another one"], title="T")
    for n in range(150):
        cut = w.rng.randrange(9, len(base) - 8)
        # pypdf rebuilds a lost xref by scanning, so a cut after the content may still read.
        w.put(f"pdf/truncated-{n}.pdf", base[:cut], "pdf-truncated", "either")
    for n in range(100):
        w.put(
            f"pdf/junk-{n}.pdf",
            b"%PDF-1.7\n" + w.junk(w.rng.randrange(16, 8192)),
            "pdf-junk",
            "fail",
        )
    for n in range(40):
        data = bytearray(base)
        # Corrupt the xref / trailer region: offsets point nowhere, the /Root is gone.
        tail = data.rfind(b"xref")
        for _ in range(8):
            pos = w.rng.randrange(tail, len(data))
            data[pos] = w.rng.randrange(256)
        data = data.replace(b"/Root", b"/Rxxt")
        w.put(f"pdf/broken-xref-{n}.pdf", bytes(data), "pdf-broken-xref", "either")
    enc = _encrypted_pdf("confidential words nobody should index")
    for n in range(20):
        w.put(f"pdf/encrypted-{n}.pdf", enc, "pdf-encrypted", "fail")
    for n in range(20):
        w.put(f"pdf/no-header-{n}.pdf", w.junk(512), "pdf-not-pdf", "fail")
    # A content stream that inflates to 300 MB: the parser must bound it or fail it.
    bomb = _pdf_with_stream(_flate_zeros(300))
    for n in range(2):
        w.put(f"pdf/flate-bomb-{n}.pdf", bomb, "pdf-flate-bomb", "either")
    bad_stream = _pdf_with_stream(w.junk(4096))
    for n in range(10):
        w.put(f"pdf/bad-stream-{n}.pdf", bad_stream, "pdf-bad-stream", "either")


def _docxs(w: _Writer) -> None:
    base = _docx_bytes(["A perfectly fine paragraph."], "Title")
    for n in range(80):
        w.put(f"docx/random-{n}.docx", w.junk(w.rng.randrange(16, 8192)), "docx-random", "fail")
    for n in range(80):
        cut = w.rng.randrange(30, len(base) - 30)
        w.put(f"docx/truncated-{n}.docx", base[:cut], "docx-truncated", "fail")
    bomb = _zip_bomb(base, 260)
    for n in range(8):
        w.put(f"docx/zip-bomb-{n}.docx", bomb, "docx-zip-bomb", "fail")
    many = _rezip(base, {}, {f"customXml/extra{i}.xml": b"<a/>" for i in range(10_050)})
    for n in range(2):
        w.put(f"docx/many-entries-{n}.docx", many, "docx-many-entries", "fail")
    for n in range(50):
        enc = ("utf-8", "utf-16")[n % 2]
        data = _rezip(base, {"word/document.xml": _entity_xml(n, enc)})
        w.put(f"docx/entities-{n}.docx", data, "docx-xml-entities", "fail")
    rels_bomb = _rezip(base, {"_rels/.rels": _entity_xml(0, "utf-8")})
    w.put("docx/entities-rels.docx", rels_bomb, "docx-xml-entities", "fail")
    for n in range(20):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr("hello.txt", f"just a zip {n}")
        w.put(f"docx/plain-zip-{n}.docx", out.getvalue(), "docx-not-docx", "fail")


def _texts(w: _Writer, outside: Path) -> None:
    for n in range(100):
        data = w.junk(w.rng.randrange(64, 4096))
        w.put(f"text/binary-{n}.md", b"\0\x01\x02" + data, "md-binary", "fail")
    for n in range(100):
        good = f"# Title {n}\n\nsome text ".encode()
        # Never valid UTF-8: a stray continuation byte, 0xFF, a broken pair, a surrogate.
        bad = w.rng.choice([b"\x80", b"\xff", b"\xfe", b"\xc3\x28", b"\xed\xa0\x80"])
        data = good + bad + b" more\n"
        w.put(f"text/invalid-utf8-{n}.{('md', 'txt')[n % 2]}", data, "invalid-utf8", "fail")
    for n in range(30):
        w.put(f"text/empty-{n}.{('md', 'txt')[n % 2]}", b" \n\t\n" * (n % 3), "empty", "skipped")
    for n in range(30):
        body = "".join("#" * (1 + (i % 6)) + f" level {i}\n\n" for i in range(5_000 + n * 10))
        w.put(f"text/deep-headings-{n}.md", body.encode(), "md-deep-headings", "either")
    for n in range(10):
        body = ">" * 100_000 + " quoted\n" + "- " * 50_000 + "list\n" + "[" * 100_000 + "\n"
        w.put(f"text/deep-nesting-{n}.md", body.encode(), "md-deep-nesting", "either")
    for n in range(40):
        kind = n % 4
        if kind == 0:  # YAML alias bomb in front matter
            anchors = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                for p, c in zip("abcdefg", "bcdefgh", strict=True)
            )
            fm = f"---\n{anchors}access: *h\n---\n# bomb\n\ntext\n"
            expect = "either"
        elif kind == 1:  # front matter that is not valid YAML
            fm = "---\ntitle: [unclosed\naccess: {\n---\n# x\n\ntext\n"
            expect = "fail"
        elif kind == 2:  # python-object tags (safe_load must refuse them)
            fm = "---\ntitle: !!python/object/apply:os.system ['echo pwned']\n---\n# x\n\nt\n"
            expect = "fail"
        else:  # deeply nested YAML
            fm = "---\nk: " + "[" * 5_000 + "]" * 5_000 + "\n---\n# x\n\ntext\n"
            expect = "either"
        w.put(f"text/front-matter-{n}.md", fm.encode(), f"front-matter-{kind}", expect)
    for n in range(30):
        ctl = "".join(chr(w.rng.randrange(1, 9)) for _ in range(400))
        w.put(f"text/control-{n}.txt", ("text " + ctl * 4).encode(), "control-chars", "fail")
    for n in range(30):
        data = "\ufeff".encode("utf-16-le") + f"utf16 text {n}".encode("utf-16-le")
        w.put(f"text/utf16-odd-{n}.txt", data[:-1], "utf16-truncated", "either")
    for n in range(50):
        html = (
            "<div>" * 50_000 + "deep" + "</div>" * 50_000
            if n % 2
            else ("<html><body>" + "<p a='" + "x" * 200_000 + "'>" + "<script>" * 1000)
        )
        w.put(f"html/hostile-{n}.html", html.encode(), "html-hostile", "either")
    # One 49 MB line (under max_file_bytes: parsed) and one above it (refused unread).
    with (w.m.folder / "text/one-line-49mb.txt").open("wb") as fh:
        for _ in range(49):
            fh.write(b"x" * 1_000_000)
    w.note("text/one-line-49mb.txt", "huge-single-line", "either")
    with (w.m.folder / "text/one-line-51mb.md").open("wb") as fh:
        for _ in range(51):
            fh.write(b"y" * 1_000_000)
    w.note("text/one-line-51mb.md", "too-large", "fail")
    # A 10⁶-line CSV export saved as text.
    with (w.m.folder / "text/export-million-lines.txt").open("wb") as fh:
        for start in range(0, 1_000_000, 10_000):
            fh.write(b"".join(b"%d,row,%d\n" % (i, i * 7) for i in range(start, start + 10_000)))
    w.note("text/export-million-lines.txt", "million-line-csv", "either")
    # Symbolic links out of the root, in every shape.
    links = w.m.folder / "links"
    links.mkdir()
    for n in range(10):
        (links / f"abs-{n}.md").symlink_to(outside / "secret.md")
        w.note(f"links/abs-{n}.md", "symlink-out", "link")
    for n in range(5):
        (links / f"rel-{n}.md").symlink_to("../../outside/secret.md")
        w.note(f"links/rel-{n}.md", "symlink-out", "link")
    for n in range(3):
        (links / f"dir-{n}").symlink_to(outside)
        w.note(f"links/dir-{n}", "symlink-dir", "link")
    (links / "loop.md").symlink_to("loop.md")
    w.note("links/loop.md", "symlink-loop", "link")
    (links / "dangling.md").symlink_to("nowhere.md")
    w.note("links/dangling.md", "symlink-dangling", "link")
    os.mkfifo(w.m.folder / "text/pipe.md")
    w.note("text/pipe.md", "fifo", "skip")


def _records(m: Manifest, rng: random.Random) -> None:
    exp: dict[str, str] = {}
    lines = ["id,title,body"]
    for n in range(20):
        lines.append(f"ok-{n},Ticket {n},Printer on floor {n} says {VALID_MARKER}csv{n}")
        exp[f"ok-{n}"] = "index"
    for n in range(150):
        lines.append(f"bad-{n},too,many,columns,{n}")  # more values than header columns
        exp[f"line-{len(lines)}"] = "fail"
    for n in range(100):
        lines.append(f",no id {n},body")
        exp[f"line-{len(lines)}"] = "fail"
    for n in range(100):
        lines.append(f"empty-{n},,")
        exp[f"empty-{n}"] = "skipped"
    for n in range(5):
        lines.append(f"big-{n},huge," + "z" * 200_000)  # above csv's field limit
        exp[f"line-{len(lines)}"] = "fail"
    for n in range(100):
        lines.append(f"dup-{n % 10},dup,dup body {n}")  # repeated explicit ids
        if n >= 10:
            exp[f"line-{len(lines)}"] = "fail"
        else:
            exp[f"dup-{n}"] = "index"
    m.csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    m.records_expect["hostile-csv"] = exp

    exp = {}
    out: list[str] = []
    for n in range(20):
        out.append(json.dumps({"id": f"ok-{n}", "text": f"Jsonl item {VALID_MARKER}jsonl{n}"}))
        exp[f"ok-{n}"] = "index"
    for n in range(150):
        out.append(f'{{"id": "broken-{n}", "text": ')
        exp[f"line-{len(out)}"] = "fail"
    for n in range(100):
        out.append(json.dumps([n, "not an object"]))
        exp[f"line-{len(out)}"] = "fail"
    for _ in range(5):
        out.append("[" * 100_000)  # nested too deep for the JSON parser
        exp[f"line-{len(out)}"] = "fail"
    for n in range(100):
        out.append(json.dumps({"id": f"empty-{n}", "text": ""}))
        exp[f"empty-{n}"] = "skipped"
    for n in range(10):
        out.append(json.dumps({"id": f"nul-{n}", "text": "a\u0000b" * 10}))
        exp[f"nul-{n}"] = "either"
    for n in range(5):
        out.append(json.dumps({"id": f"huge-{n}", "text": "w" * 2_000_000}))
        exp[f"huge-{n}"] = "either"
    for n in range(50):
        out.append(json.dumps({"id": f"obj-{n}", "text": {"nested": [n] * 10}}))
        exp[f"obj-{n}"] = "either"
    m.jsonl.write_text("\n".join(out) + "\n", encoding="utf-8")
    m.records_expect["hostile-jsonl"] = exp


def generate(root: Path, seed: int = 14) -> Manifest:
    """Write the suite's sources under `root`; see the module docstring."""
    rng = random.Random(seed)
    outside = root / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.md").write_text(f"# Secret\n\n{SECRET} payroll\n", encoding="utf-8")
    m = Manifest(folder=root / "folder", csv=root / "records.csv", jsonl=root / "records.jsonl")
    m.folder.mkdir()
    w = _Writer(m, rng)
    _valid(w)
    _pdfs(w)
    _docxs(w)
    _texts(w, outside)
    _records(m, rng)
    return m


def _records_source(name: str, path: Path, text_field: str, title_field: str | None) -> str:
    title = f'title_field = "{title_field}"\n' if title_field else ""
    return (
        f'\n[[sources]]\nname = "{name}"\nkind = "records"\npath = "{path}"\nid_field = "id"\n'
        f'{title}text_fields = ["{text_field}"]\naccess = ["public"]\nresidency = "eu"\n'
    )


def config(root: Path) -> str:
    """sovra.toml for the generated sources (BM25-only sync: no model needed)."""
    return (
        f"""
[workspace]
home = "{root / "data"}"
region = "eu-de"

[[sources]]
name = "hostile"
kind = "folder"
path = "{root / "folder"}"
access = ["public"]
residency = "eu"
"""
        + _records_source("hostile-csv", root / "records.csv", "body", "title")
        + _records_source("hostile-jsonl", root / "records.jsonl", "text", None)
    )
