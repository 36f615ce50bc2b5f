"""Governance labels of one item: source defaults, then `AccessRule`s, then the item's own claims.

Precedence (later wins): the source's `access`/`classification`/`residency`, then each rule
whose glob matches the item's path (in config order; `access` replaces, `add_access` appends),
then the item's own metadata (markdown front matter, a records access column). Anything that
cannot be understood falls back to the strictest choice: admins-only access, the highest
classification label. The principle is "unknown → deny" (docs/architecture.md).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sovra.config import AccessRule
from sovra.domain import ClassificationScale, DomainError, content_hash, validate_access


@functools.lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a path glob to a regex: `**` spans folders, `*` and `?` stay in one segment."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole folders
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(path: str, pattern: str) -> bool:
    """Match a posix path relative to the source root against a glob (`runbooks/**`, `**/*.md`)."""
    return _glob_regex(pattern.lstrip("/")).match(path) is not None


@dataclass(frozen=True)
class Labels:
    """Effective access, classification and residency of one item, plus why they fell back."""

    access: tuple[str, ...]
    classification: str
    residency: str
    tags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def fingerprint(self) -> str:
        """Goes into the item's version so that a label change re-indexes it (revocation)."""
        return content_hash(
            "\x1f".join(
                ["|".join(self.access), self.classification, self.residency, "|".join(self.tags)]
            )
        )[7:23]


def _safe_access(entries: Sequence[str], what: str, warnings: list[str]) -> tuple[str, ...] | None:
    try:
        return validate_access(entries)
    except DomainError as exc:
        warnings.append(f"{what}: {exc}; access set to admins only")
        return None


def resolve_labels(
    *,
    path: str,
    access: Sequence[str],
    classification: str,
    residency: str,
    rules: Iterable[AccessRule],
    scale: ClassificationScale,
    overrides: Mapping[str, object] | None = None,
) -> Labels:
    """Apply rules matching `path`, then `overrides` (front matter keys access/classification/residency)."""
    warnings: list[str] = []
    acc: list[str] = list(access)
    cls = classification
    res = residency
    tags: list[str] = []
    for rule in rules:
        if not glob_match(path, rule.match):
            continue
        if rule.access is not None:
            acc = list(rule.access)
        acc.extend(rule.add_access)
        if rule.classification is not None:
            cls = rule.classification
        if rule.residency is not None:
            res = rule.residency
        tags.extend(rule.tags)

    broken = False
    if overrides:
        raw = overrides.get("access")
        if raw is not None:
            if isinstance(raw, str):
                acc = [p for p in re.split(r"[,;\s]+", raw) if p]
            elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
                acc = list(raw)
            else:
                warnings.append("front matter access is not a list of strings; admins only")
                broken = True
        raw_cls = overrides.get("classification")
        if raw_cls is not None:
            cls = str(raw_cls)
        raw_res = overrides.get("residency")
        if raw_res is not None:
            res = str(raw_res).strip() or res

    normalised = None if broken else _safe_access(acc, f"access of {path}", warnings)
    try:
        scale.rank(cls)
    except DomainError as exc:
        # An unknown label must not lower protection: take the strictest one we know.
        warnings.append(f"{exc}; classified {scale.labels[-1]!r}")
        cls = scale.labels[-1]
    return Labels(
        access=normalised if normalised is not None else validate_access(()),
        classification=cls,
        residency=res,
        tags=tuple(dict.fromkeys(tags)),
        warnings=tuple(warnings),
    )
