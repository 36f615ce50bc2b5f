"""Text fields from callers: valid Unicode only (no lone surrogates, no NUL), or a 422.

A lone surrogate cannot be encoded as UTF-8 and breaks the tokenizer and SQLite further down;
it is refused at the edge with a clear message instead.
"""

from __future__ import annotations

from typing import Annotated

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
