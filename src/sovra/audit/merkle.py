"""RFC 9162 Merkle tree arithmetic shared by the log (proof building) and the verifier.

Nothing here touches storage: the log asks `*_plan` functions which complete subtree
hashes ("nodes", addressed as (level, index) like tlog-tiles hashes) a proof needs, fetches
them in one batch, and lets `assemble` fold them into proof hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]
"""(level, index): the root of the complete subtree covering leaves
[index * 2**level, (index + 1) * 2**level)."""

Span = tuple[int, int]
"""[start, end) leaf range whose RFC 9162 Merkle tree hash is one proof element."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_pow2_below(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2), the RFC 9162 split point k."""
    return 1 << ((n - 1).bit_length() - 1)


def span_nodes(start: int, end: int) -> list[NodeId]:
    """Complete subtrees, left to right, whose hashes fold into the hash of [start, end).

    Valid for the spans RFC 9162 proofs use: `start` is a multiple of a power of two that is
    at least `end - start`, so each chunk is aligned.
    """
    nodes: list[NodeId] = []
    pos, remaining = start, end - start
    while remaining:
        level = remaining.bit_length() - 1
        nodes.append((level, pos >> level))
        pos += 1 << level
        remaining -= 1 << level
    return nodes


def fold_nodes(hashes: Sequence[bytes]) -> bytes:
    """Hash of a span from its complete subtrees (left to right): right-to-left folding."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def compact_range(size: int) -> list[NodeId]:
    """The right-edge complete subtrees of a tree of `size` leaves (one per set bit)."""
    return span_nodes(0, size)


def inclusion_plan(index: int, size: int) -> list[Span]:
    """Spans of the RFC 9162 §2.1.3.1 inclusion proof, leaf's sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    spans: list[Span] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = largest_pow2_below(hi - lo)
        if m < k:
            spans.append((lo + k, hi))
            hi = lo + k
        else:
            spans.append((lo, lo + k))
            lo, m = lo + k, m - k
    spans.reverse()
    return spans


def consistency_plan(size1: int, size2: int) -> list[Span]:
    """Spans of the RFC 9162 §2.1.4.1 consistency proof from size1 to size2."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    spans: list[Span] = []
    lo, hi, m, complete = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                spans.append((lo, hi))
            break
        k = largest_pow2_below(n)
        if m <= k:
            spans.append((lo + k, hi))
            hi = lo + k
        else:
            spans.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    spans.reverse()
    return spans


def nodes_for(spans: Iterable[Span]) -> set[NodeId]:
    needed: set[NodeId] = set()
    for start, end in spans:
        needed.update(span_nodes(start, end))
    return needed


def assemble(
    spans: Sequence[Span], nodes: Mapping[NodeId, bytes], memo: dict[Span, bytes] | None = None
) -> list[bytes]:
    """Proof hashes for `spans` given the fetched complete-subtree hashes.

    `memo` shares folded span hashes between the proofs of one batch, whose upper spans
    are mostly the same.
    """
    out: list[bytes] = []
    for span in spans:
        h = None if memo is None else memo.get(span)
        if h is None:
            start, end = span
            if end - start & (end - start - 1) == 0:
                # A power-of-two span is one complete subtree: a single node.
                level = (end - start).bit_length() - 1
                h = nodes[(level, start >> level)]
            else:
                h = fold_nodes([nodes[n] for n in span_nodes(start, end)])
            if memo is not None:
                memo[span] = h
        out.append(h)
    return out


def root_from_nodes(size: int, get: Callable[[NodeId], bytes]) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    return fold_nodes([get(n) for n in compact_range(size)])


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash of a list of leaf hashes, level by level (used by verification)."""
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            # RFC 9162 does not duplicate the odd node: it is promoted unchanged.
            nxt.append(level[-1])
        level = nxt
    return level[0]


def naive_root(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) straight from RFC 9162's recursive definition: the bench's reference."""
    n = len(entries)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(entries[0])
    k = largest_pow2_below(n)
    return node_hash(naive_root(entries[:k]), naive_root(entries[k:]))
