"""Text fields from callers: valid Unicode only (no lone surrogates, no NUL), or a 422; and
the one check of where a sign-in may continue to (`safe_next_path`).

A lone surrogate cannot be encoded as UTF-8 and breaks the tokenizer and SQLite further down;
it is refused at the edge with a clear message instead.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator


def clean_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return value


def is_clean(value: str) -> bool:
    try:
        clean_text(value)
    except ValueError:
        return False
    return True


Text = Annotated[str, AfterValidator(clean_text)]


NEXT_PATH_MAX = 500


def _local_path(value: str) -> bool:
    # Browsers drop tab/CR/LF anywhere in a URL, strip leading C0 controls and spaces, and read
    # `\` as `/` (so `/\evil` and `/<TAB>/evil` become `//evil`, another host): any control
    # character or backslash is refused outright rather than normalised.
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in value):
        return False
    if not value.startswith("/") or value.startswith("//"):
        return False
    parts = urlsplit(value)
    return not (parts.scheme or parts.netloc)


def safe_next_path(value: str) -> str:
    """`value` when it is a path on this site, else `/`: never an open redirect. The check also
    holds after one percent-decoding, for a proxy or framework further on that decodes."""
    if not value or len(value) > NEXT_PATH_MAX:
        return "/"
    if _local_path(value) and _local_path(unquote(value)):
        return value
    return "/"
