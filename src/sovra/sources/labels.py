"""Governance labels of one item: source defaults, then `AccessRule`s, then the item's own claims.

Precedence (later wins): the source's `access`/`classification`/`residency`, then each rule
whose glob matches the item's path (in config order; `access` replaces, `add_access` appends),
then the item's own metadata (markdown front matter, a records access column). Anything that
cannot be understood falls back to the strictest choice: admins-only access, the highest
classification label. The principle is "unknown → deny" (docs/architecture.md).

What `sovra.toml` grants is a ceiling for the item's own claims: whoever can write a file in
a source folder must not be able to widen its audience. Unless the source trusts its items
(`trust_front_matter = true`, or a records `access_field` the administrator named), front
matter access is intersected with the granted access (no new principals; under a `public`
grant any audience is narrower), classification can only go up and residency only narrow.
What was refused is returned in `Labels.refused` for the sync report.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sovra.config import AccessRule
from sovra.domain import (
    PUBLIC,
    ClassificationScale,
    DomainError,
    content_hash,
    residency_contains,
    validate_access,
)


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
    refused: tuple[str, ...] = field(default=(), compare=False)
    """Claims of the item that would have widened what sovra.toml grants (not applied)."""

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
    trusted: bool = False,
) -> Labels:
    """Apply rules matching `path`, then `overrides` (front matter keys access/classification/
    residency): within what the config grants, or replacing it when `trusted`."""
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
    refused: list[str] = []
    if overrides:
        raw = overrides.get("access")
        if raw is not None:
            claimed: list[str] | None = None
            if isinstance(raw, str):
                claimed = [p for p in re.split(r"[,;\s]+", raw) if p]
            elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
                claimed = list(raw)
            else:
                warnings.append("front matter access is not a list of strings; admins only")
                broken = True
            if claimed is not None and not trusted:
                if _safe_access(claimed, f"front matter access of {path}", warnings) is None:
                    broken = True  # a claim we cannot read must never widen: admins only
                else:
                    acc = _narrow_access(acc, claimed, refused)
            elif claimed is not None:
                acc = claimed
        raw_cls = overrides.get("classification")
        if raw_cls is not None:
            claim_cls = str(raw_cls)
            cls = claim_cls if trusted else _raise_classification(cls, claim_cls, scale, refused)
        raw_res = overrides.get("residency")
        if raw_res is not None:
            claim = str(raw_res).strip()
            if claim and (trusted or residency_contains(res, claim)):
                res = claim
            elif claim:
                refused.append(f"residency {claim!r} is wider than the granted {res!r}")

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
        refused=tuple(refused),
    )


def _narrow_access(granted: Sequence[str], claimed: Sequence[str], refused: list[str]) -> list[str]:
    """The claimed audience within the granted one; an empty result means admins only."""
    grant = {g.strip() for g in granted}
    if PUBLIC in grant:
        return list(claimed)  # everyone may read it already: any named audience is narrower
    claim = [c.strip() for c in claimed]
    # `public` contains every granted principal, so its intersection with the grant is the grant.
    kept = sorted(grant) if PUBLIC in claim else [c for c in claim if c in grant]
    extra = [c for c in claim if c not in grant]
    if extra:
        refused.append(
            f"access {', '.join(extra)} not granted by sovra.toml"
            f" (granted: {', '.join(sorted(grant)) or 'admins only'})"
        )
    return kept


def _raise_classification(
    granted: str, claimed: str, scale: ClassificationScale, refused: list[str]
) -> str:
    """The stricter of the granted and the claimed label; an unknown claim is checked later."""
    try:
        lower = scale.rank(claimed) < scale.rank(granted)
    except DomainError:
        return claimed  # unknown → the caller falls back to the strictest label
    if lower:
        refused.append(f"classification {claimed!r} is below the granted {granted!r}")
        return granted
    return claimed


class LabelledSource(Protocol):
    """What every source config grants: the fields `source_labels` reads."""

    @property
    def access(self) -> tuple[str, ...]: ...
    @property
    def classification(self) -> str: ...
    @property
    def residency(self) -> str: ...
    @property
    def rules(self) -> tuple[AccessRule, ...]: ...


def source_labels(
    source: LabelledSource,
    path: str,
    scale: ClassificationScale,
    overrides: Mapping[str, object] | None = None,
    *,
    trusted: bool = False,
) -> Labels:
    """`resolve_labels` with the grant of one configured source."""
    return resolve_labels(
        path=path,
        access=source.access,
        classification=source.classification,
        residency=source.residency,
        rules=source.rules,
        scale=scale,
        overrides=overrides,
        trusted=trusted,
    )


def label_metadata(labels: Labels, refused_key: str | None = None) -> dict[str, str]:
    """The document metadata that reports labels: rule tags, warnings, refused claims."""
    out: dict[str, str] = {}
    if labels.tags:
        out["tags"] = ",".join(labels.tags)
    if labels.warnings:
        out["label_warnings"] = "; ".join(labels.warnings)
    if labels.refused and refused_key is not None:
        out[refused_key] = "; ".join(labels.refused)
    return out
