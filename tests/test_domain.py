from __future__ import annotations

import pytest

from sovra.domain import (
    ADMIN_ONLY,
    Chunk,
    ClassificationScale,
    DomainError,
    Principal,
    SearchFilter,
    may_process_in,
    residency_contains,
    validate_access,
)


def chunk(
    access: tuple[str, ...], classification: str = "internal", residency: str = "eu"
) -> Chunk:
    return Chunk(
        id="s:d#0",
        document_id="s:d",
        source="s",
        position=0,
        text="t",
        title="t",
        uri="u",
        heading_path=(),
        language="en",
        access=access,
        classification=classification,
        residency=residency,
    )


def test_empty_access_means_admins_only() -> None:
    assert validate_access([]) == (ADMIN_ONLY,)
    with pytest.raises(DomainError, match="everyone"):
        validate_access(["everyone"])


def test_principal_tokens_and_admin_only_documents() -> None:
    carol = Principal("carol", frozenset({"staff"}))
    root = Principal("root", frozenset({"admins"}))
    doc = chunk((ADMIN_ONLY,))
    assert not SearchFilter.for_principal(carol).admits(doc)
    assert SearchFilter.for_principal(root).admits(doc)
    assert SearchFilter.for_principal(carol).admits(chunk(("public",)))
    assert not SearchFilter.for_principal(carol).admits(chunk(("group:sre",)))


def test_residency_containment() -> None:
    assert residency_contains("eu", "eu-de")
    assert not residency_contains("eu-de", "eu")
    assert not residency_contains("eu", "europa")
    assert may_process_in("eu", "eu-de")
    assert not may_process_in("sa", "eu-de")
    f = SearchFilter(access_tokens=frozenset({"public"}), region="eu-de")
    assert f.admits(chunk(("public",), residency="*"))
    assert not f.admits(chunk(("public",), residency="sg"))


def test_classification_scale_rejects_unknown() -> None:
    scale = ClassificationScale()
    assert scale.strictest(["internal", "restricted", "public"]) == "restricted"
    assert scale.allows("confidential", "internal")
    assert not scale.allows("internal", "confidential")
    with pytest.raises(DomainError, match="unknown classification"):
        scale.rank("secret")
    f = SearchFilter(access_tokens=frozenset({"public"}), max_classification_rank=1)
    assert f.admits(chunk(("public",), classification="internal"))
    assert not f.admits(chunk(("public",), classification="confidential"))
    assert not f.admits(chunk(("public",), classification="unknown-label"))


def test_date_filter_mixes_naive_and_aware_timestamps() -> None:
    from datetime import UTC, datetime

    c = chunk(("public",))
    c.modified_at = datetime(2026, 5, 1, 12, 0)  # naive: taken as UTC
    f = SearchFilter(
        access_tokens=frozenset({"public"}), modified_after=datetime(2026, 5, 1, 11, 0, tzinfo=UTC)
    )
    assert f.admits(c)
    g = SearchFilter(access_tokens=frozenset({"public"}), modified_before=datetime(2026, 5, 1))
    assert not g.admits(c)
    c.modified_at = None
    assert not f.admits(c)
