"""Proof verification that trusts nothing from storage (the verifier side of the Trillian split).

Every function takes only the claimed values (sizes, hashes, proof) and either returns or raises
`ProofError`. Inclusion and consistency follow RFC 9162 §2.1.3.2 / §2.1.4.2; the subtree
variants follow the Merkle Tree Certificates draft (appendix on subtree proofs), which the
C2SP test vectors also cover.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from sovra.audit.merkle import EMPTY_ROOT, HASH_SIZE, node_hash
from sovra.errors import Invalid


class ProofError(Invalid, ValueError):
    """A proof does not bind the claimed values together."""


def _check_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise ProofError(f"proof hash {i} has {len(h)} bytes, expected {HASH_SIZE}")


def _equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _decomp_inclusion(index: int, size: int) -> tuple[int, int]:
    """(inner, border): proof hashes below and above the point where the path leaves the
    perfect part of the tree."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(leaf)} bytes, expected {HASH_SIZE}")
    _check_hashes(proof)
    inner, border = _decomp_inclusion(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, expected {inner + border}")
    res = _chain_inner(leaf, proof[:inner], index)
    return _chain_border_right(res, proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `leaf` is the leaf hash at `index` in the tree with `root`."""
    calculated = root_from_inclusion(index, size, leaf, proof)
    if not _equal(calculated, root):
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless the tree (size1, root1) is a prefix of (size2, root2)."""
    if size1 < 0 or size2 < size1:
        raise ProofError(f"tree size went from {size1} to {size2}; logs only grow")
    if size1 == 0:
        # An empty tree is a prefix of everything: a "proof" from it proves nothing.
        raise ProofError("consistency from an empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("equal tree sizes need an empty consistency proof")
        if not _equal(root1, root2):
            raise ProofError(f"two different roots for the same tree size {size1}")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_hashes(proof)
    inner, border = _decomp_inclusion(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    if size1 == 1 << shift:
        # size1 is a complete subtree of size2: its root is the proof's implicit seed.
        seed, rest = root1, list(proof)
    else:
        seed, rest = proof[0], list(proof[1:])
    if len(rest) != inner + border:
        raise ProofError(f"consistency proof has {len(proof)} hashes; wrong length")
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if not _equal(hash1, root1):
        raise ProofError(f"consistency proof does not reproduce the root of size {size1}")
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if not _equal(hash2, root2):
        raise ProofError(f"consistency proof does not reproduce the root of size {size2}")


def valid_subtree(start: int, end: int) -> bool:
    """A subtree [start, end) is valid when start is a multiple of BIT_CEIL(end - start)."""
    if not 0 <= start < end:
        return False
    width = end - start
    ceil = 1 << (width - 1).bit_length()
    return start % ceil == 0


def _subtree_consistency_root(
    size: int, start: int, end: int, proof: Sequence[bytes], node: bytes
) -> bytes:
    """Root of the size-`size` tree implied by the proof, checking it reproduces `node`."""
    if not valid_subtree(start, end) or size < end:
        raise ProofError(f"subtree [{start}, {end}) is not valid in a tree of size {size}")
    _check_hashes(proof)
    fn, sn, tn = start, end - 1, size - 1
    if sn == tn:
        while fn != sn:
            fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    else:
        while fn != sn and sn & 1:
            fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    items = list(proof)
    if fn == sn:
        fr = sr = node
    else:
        if not items:
            raise ProofError("subtree proof is too short")
        fr = sr = items.pop(0)
    for p in items:
        if tn == 0:
            raise ProofError("subtree proof is too long")
        if sn & 1 or sn == tn:
            if fn < sn:
                fr = node_hash(p, fr)
            sr = node_hash(p, sr)
            while sn & 1 == 0:
                fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
        else:
            sr = node_hash(sr, p)
        fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    if tn != 0:
        raise ProofError("subtree proof is too short")
    if not _equal(fr, node):
        raise ProofError(f"subtree proof does not reproduce the hash of [{start}, {end})")
    return sr


def verify_subtree_consistency(
    start: int, end: int, size: int, subtree_root: bytes, root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless subtree [start, end) with `subtree_root` is part of the tree
    (size, root)."""
    if start == end:
        # The empty subtree is consistent with any tree it fits in; its hash is MTH({}).
        if end > size or proof or not _equal(subtree_root, EMPTY_ROOT):
            raise ProofError(f"empty subtree at {start} is not valid in a tree of size {size}")
        return
    calculated = _subtree_consistency_root(size, start, end, proof, subtree_root)
    if not _equal(calculated, root):
        raise ProofError(f"subtree proof does not lead to the root of size {size}")


def verify_subtree_inclusion(
    index: int, start: int, end: int, leaf: bytes, proof: Sequence[bytes], subtree_root: bytes
) -> None:
    """Raise ProofError unless `leaf` is at `index` inside subtree [start, end)."""
    if not valid_subtree(start, end) or not start <= index < end:
        raise ProofError(f"leaf {index} is not inside a valid subtree [{start}, {end})")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(leaf)} bytes, expected {HASH_SIZE}")
    rel = index - start
    calculated = _subtree_consistency_root(end - start, rel, rel + 1, proof, leaf)
    if not _equal(calculated, subtree_root):
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the subtree root")
