"""Facets of a search: how many matching Documents per source, language, classification and
modified-date bucket.

Counted from a `SearchResult` the workspace produced for a principal — its hits were filtered
inside the index for that principal — so a document the caller may not read can never add to a
count, and the counts are over the search's candidate passages (the documents the query
matched, up to the candidate limit), one per document.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sovra.domain import as_utc
from sovra.search.hybrid import SearchResult

MODIFIED_BUCKETS: tuple[tuple[str, int], ...] = (
    ("past week", 7),
    ("past month", 31),
    ("past year", 365),
)
"""Modified-date buckets, newest first, by age in days; older ones are "older", and a document
without a time is "unknown"."""
OLDER = "older"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class FacetValue:
    value: str
    count: int
    modified_after: datetime | None = None
    """For a date bucket: the bound a filter on it uses (None for "older"/"unknown")."""


@dataclass(frozen=True)
class Facets:
    source: tuple[FacetValue, ...]
    language: tuple[FacetValue, ...]
    classification: tuple[FacetValue, ...]
    modified: tuple[FacetValue, ...]

    def to_dict(self) -> dict[str, Any]:
        def rows(values: tuple[FacetValue, ...]) -> list[dict[str, Any]]:
            out = []
            for v in values:
                row: dict[str, Any] = {"value": v.value, "count": v.count}
                if v.modified_after is not None:
                    row["modified_after"] = v.modified_after.isoformat()
                out.append(row)
            return out

        return {
            "source": rows(self.source),
            "language": rows(self.language),
            "classification": rows(self.classification),
            "modified": rows(self.modified),
        }


def _bucket(modified: datetime | None, now: datetime) -> str:
    if modified is None:
        return UNKNOWN
    for name, days in MODIFIED_BUCKETS:
        if as_utc(modified) >= datetime.combine((now - timedelta(days=days)).date(), time.min, UTC):
            return name
    return OLDER


def facets_of(result: SearchResult, *, now: datetime | None = None) -> Facets:
    """Document counts per facet value over `result`'s hits (each document once)."""
    now = now or datetime.now(UTC)
    seen: dict[str, Any] = {}
    for h in result.hits:
        seen.setdefault(h.chunk.document_id, h.chunk)
    chunks = list(seen.values())

    def ranked(counter: Counter[str]) -> tuple[FacetValue, ...]:
        return tuple(
            FacetValue(v, n) for v, n in sorted(counter.items(), key=lambda i: (-i[1], i[0]))
        )

    dates = Counter(_bucket(c.modified_at, now) for c in chunks)
    order = [name for name, _ in MODIFIED_BUCKETS] + [OLDER, UNKNOWN]
    # Whole days (midnight UTC), so the filter a bucket links to is a date and counts are
    # stable within a day.
    bounds = {
        name: datetime.combine((now - timedelta(days=days)).date(), time.min, UTC)
        for name, days in MODIFIED_BUCKETS
    }
    # Date buckets are cumulative filters in the UI ("modified in the past month"), so each
    # bucket counts the documents at least that recent; older/unknown count themselves.
    modified = []
    running = 0
    for name in order:
        running += dates.get(name, 0)
        count = running if name in bounds else dates.get(name, 0)
        if count:
            modified.append(FacetValue(name, count, bounds.get(name)))
    return Facets(
        source=ranked(Counter(c.source for c in chunks)),
        language=ranked(Counter(c.language for c in chunks if c.language)),
        classification=ranked(Counter(c.classification for c in chunks)),
        modified=tuple(modified),
    )
