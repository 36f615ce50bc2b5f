"""Full verification of a stored log: recompute every leaf and node, check every checkpoint.

Trust comes from the caller (the log's origin and verifier keys from the key files); the store
is only a source of bytes. The fast path compares whole levels at once; when something
differs, a second pass walks the rows to name the first bad entry, node or checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sovra.audit.merkle import EMPTY_ROOT, compact_range, fold_nodes
from sovra.audit.note import (
    Checkpoint,
    NoteError,
    NoteVerifier,
    open_checkpoint,
    verify_cosignatures,
)
from sovra.audit.store import LogStore

CHUNK = 1 << 16
_ALL = 1 << 47


@dataclass
class VerifyReport:
    """Outcome of a full verification; `problem` names the first bad entry or object."""

    ok: bool
    size: int
    checkpoints: int
    root: bytes
    problem: str | None = None
    bad_index: int | None = None


class _Bad(Exception):
    def __init__(self, problem: str, index: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.index = problem, index


def _leaves(store: LogStore, size: int, progress: Callable[[int], None] | None) -> list[bytes]:
    sha = hashlib.sha256
    leaves: list[bytes] = []
    for start in range(0, size, CHUNK):
        end = min(size, start + CHUNK)
        datas = store.entry_range(start, end)
        if len(datas) != end - start:
            expected = start
            for idx, _ in store.entries(start, end):
                if idx != expected:
                    break
                expected += 1
            raise _Bad(f"entry {expected} is missing", expected)
        leaves.extend([sha(b"\x00" + d).digest() for d in datas])
        if progress is not None:
            progress(end - start)
    return leaves


def _nothing_beyond(store: LogStore, size: int) -> None:
    # Checked after the hashes, so an entry slipped in mid-log is named where it was inserted
    # (its hash mismatches there) rather than where the shifted tail now ends.
    for idx, _ in store.entries(size):
        raise _Bad(f"entry {idx} lies beyond the signed tree size {size}", idx)


def _locate(store: LogStore, level: int, cur: list[bytes], size: int) -> _Bad:
    """The first difference between stored level `level` and the recomputed `cur`."""
    stored = store.level_range(level, 0, _ALL)
    for pos, (idx, h) in enumerate(stored):
        if idx != pos or pos >= len(cur):
            first = min(idx, pos)
            if level == 0:
                return _Bad(f"entry {first}: stored leaf hash is missing or unexpected", first)
            return _Bad(
                f"stored tree node (level {level}, index {first}) is missing or unexpected",
                first << level,
            )
        if h != cur[pos]:
            lo, hi = pos << level, min((pos + 1) << level, size) - 1
            if level == 0:
                return _Bad(
                    f"entry {pos}: its bytes do not match the stored leaf hash "
                    "(entry or hash altered)",
                    pos,
                )
            return _Bad(
                f"stored tree node (level {level}, index {pos}) over entries {lo}-{hi} is wrong",
                lo,
            )
    pos = len(stored)
    return _Bad(f"stored tree node (level {level}, index {pos}) is missing", pos << level)


def _levels(store: LogStore, leaves: list[bytes], size: int) -> list[list[bytes]]:
    sha = hashlib.sha256
    levels = [leaves]
    level = 0
    while True:
        cur = levels[level]
        stored = store.node_range(level, 0, len(cur))
        if stored != cur:
            raise _locate(store, level, cur, size)
        extra = store.level_range(level, len(cur), _ALL)
        if extra:
            raise _Bad(
                f"unexpected stored tree node (level {level}, index {extra[0][0]})",
                min(size, extra[0][0] << level),
            )
        if len(cur) < 2:
            above = store.level_range(level + 1, 0, _ALL)
            if above:
                raise _Bad(f"unexpected stored tree node (level {level + 1}, index {above[0][0]})")
            return levels
        # An odd last node has no sibling yet: zip(strict=False) leaves it out on purpose.
        levels.append(
            [sha(b"\x01" + a + b).digest() for a, b in zip(cur[0::2], cur[1::2], strict=False)]
        )
        level += 1


def verify_store(
    store: LogStore,
    origin: str,
    trusted: list[NoteVerifier],
    progress: Callable[[int], None] | None = None,
    anchor: str | None = None,
    witnesses: list[NoteVerifier] | None = None,
) -> VerifyReport:
    stored_size = store.size()
    notes = store.checkpoints()

    def fail(problem: str, index: int | None = None) -> VerifyReport:
        return VerifyReport(False, stored_size, len(notes), EMPTY_ROOT, problem, index)

    if not notes:
        if stored_size == 0 and next(store.entries(0), None) is None:
            return VerifyReport(True, 0, 0, EMPTY_ROOT)
        return fail("the log has entries but no signed checkpoint")
    signed: list[Checkpoint] = []
    for size, note in notes:
        try:
            checkpoint, _ = open_checkpoint(note, trusted, origin)
            # A stored cosignature by a configured witness must verify too.
            verify_cosignatures(note, witnesses or [])
        except NoteError as exc:
            return fail(f"checkpoint at size {size}: {exc}")
        if checkpoint.size != size:
            return fail(f"checkpoint stored for size {size} says {checkpoint.size}")
        signed.append(checkpoint)
    size = signed[-1].size
    if stored_size != size:
        return fail(
            f"store claims {stored_size} entries but the latest signed checkpoint has {size}"
        )

    try:
        levels = _levels(store, _leaves(store, size, progress), size)
        _nothing_beyond(store, size)
    except _Bad as bad:
        return fail(bad.problem, bad.index)

    def root_at(n: int) -> bytes:
        return fold_nodes([levels[lv][i] for lv, i in compact_range(n)]) if n else EMPTY_ROOT

    if anchor is not None:
        try:
            held, _ = open_checkpoint(anchor, trusted, origin)
        except NoteError as exc:
            return fail(f"the held checkpoint is not valid: {exc}")
        if held.size > size:
            return fail(
                f"the log was truncated: a held checkpoint has {held.size} entries, "
                f"the log only {size}",
                size,
            )
        if held.root != root_at(held.size):
            return fail(f"the first {held.size} entries differ from the held checkpoint", 0)
    prev = 0
    for checkpoint in signed:
        if checkpoint.root != root_at(checkpoint.size):
            return fail(
                f"entries {prev}-{checkpoint.size - 1} were rewritten: they no longer produce "
                f"the root signed at size {checkpoint.size}",
                prev,
            )
        prev = checkpoint.size
    return VerifyReport(True, size, len(notes), signed[-1].root)
