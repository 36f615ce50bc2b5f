"""The connector interface every source kind implements, and the errors a sync must tell apart.

The shape follows Onyx-style connectors: `list()` is cheap and yields (external id, version)
pairs so the pipeline can skip unchanged items; `fetch()` does the real work for one item;
`permissions()` answers who may read one item without fetching its text. The incremental
cursor is the version: the pipeline keeps the last indexed version of each item and fetches
only items whose listed version differs (docs/connectors.md has the whole contract, and
tests/sources/test_conformance.py checks every connector against it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from sovra.domain import Document, DocumentRef
from sovra.errors import Invalid, NotFound, Unavailable

LABELS_REFUSED = "labels_refused"
"""Document metadata key a connector sets when the item's own labels tried to widen what the
config grants; the sync moves it into its report (and out of the indexed metadata)."""


LINE_BASE = "line_base"
"""Document metadata key of a connector whose text is a file's lines (git): the number of
file lines before `text` starts (front matter); chunk uris then end in `#L<line>`."""


class SourceError(Invalid):
    """Base class of connector errors (itself: a source configured wrongly)."""


class SourceUnavailable(Unavailable, SourceError):
    """The whole source cannot be read (folder missing, records file unparseable).

    A sync that hits this stops without touching the index: an unmounted share must never
    look like "every document was deleted".
    """


class DocumentError(SourceError):
    """One document cannot be turned into text; the sync records it as failed and goes on."""

    def __init__(self, external_id: str, reason: str) -> None:
        super().__init__(f"{external_id}: {reason}")
        self.external_id = external_id
        self.reason = reason


class MalformedDocument(DocumentError):
    """The bytes are not a valid instance of the format (truncated PDF, junk, bad encoding)."""


class DocumentTooLarge(DocumentError):
    """The item is above the source's `max_file_bytes`; it is not read at all."""


class EmptyDocument(DocumentError):
    """The item holds no text to index; the sync records it as skipped (fine), not failed."""


def no_text_reason(front_matter: Mapping[str, object]) -> str:
    """Why a parsed file with no body is skipped: a redirect or stub page (front matter only)
    reads differently to an operator than an empty file."""
    if not front_matter:
        return "empty file: no text"
    for key in ("redirect_to", "redirect", "redirect_url"):
        target = front_matter.get(key)
        if isinstance(target, str) and target.strip():
            return f"redirect page to {target.strip()[:200]}: front matter only, no body text"
    return "front matter only, no body text (a redirect or stub page)"


class UnsupportedFormat(DocumentError):
    """No parser handles this item's format."""


class DocumentNotFound(NotFound, DocumentError):
    """The item vanished between `list()` and `fetch()`; the next sync deletes it."""


@runtime_checkable
class Connector(Protocol):
    """One configured source. External ids are unique within the source and stable over time."""

    @property
    def name(self) -> str:
        """The source name; document ids are `f"{name}:{external_id}"`."""
        ...

    def list(self) -> Iterator[DocumentRef]:
        """Every item currently in the source with a version that changes when it (or its
        labels) change. Raises SourceUnavailable if the source as a whole cannot be listed."""
        ...

    def fetch(self, external_id: str) -> Document:
        """The item as a Document with text and labels; raises a DocumentError subclass."""
        ...

    def permissions(self, external_id: str) -> tuple[str, ...]:
        """Normalised access strings of the item (`group:admins` when undeterminable)."""
        ...
