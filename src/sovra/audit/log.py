"""`AuditLog`: the append-only, signed Merkle log that the rest of sovra writes to.

It ties together a store (SQLite or PostgreSQL), the signing key ring, the per-subject keys
and the Merkle arithmetic. Appends are group-committed: concurrent callers' events are
written in one transaction (one fsync, one signed checkpoint), and each caller gets its
receipt only after that commit.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sovra.audit.check import VerifyReport, verify_store
from sovra.audit.event import AuditEvent, format_time, seal, unseal
from sovra.audit.keys import KEY_ENV, KeyFileError, KeyRing
from sovra.audit.merkle import (
    EMPTY_ROOT,
    NodeId,
    assemble,
    compact_range,
    consistency_plan,
    fold_nodes,
    inclusion_plan,
    leaf_hash,
    node_hash,
    nodes_for,
)
from sovra.audit.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    add_signature,
    open_checkpoint,
    open_note,
    parse_note,
    sign_note,
)
from sovra.audit.receipt import Receipt
from sovra.audit.store import AppendPlan, LogStore, NodeReader, SqliteStore, StoreError
from sovra.audit.subjects import SubjectKeys
from sovra.errors import Invalid, NotFound, Unavailable

RETENTION_MIN_DAYS = 183
"""Six months: the floor for deployer log keeping under the AI Act (Art. 19 and 26(6))."""
RETENTION_ENV = "SOVRA_AUDIT_RETENTION_DAYS"
URL_ENV = "SOVRA_AUDIT_URL"
SCHEMA_ENV = "SOVRA_AUDIT_SCHEMA"
SIGNING_KEY_META = "signing_key"
"""Meta row of a shared log: the verifier key (public) every replica must sign with."""
MAX_BATCH = 2000
CHECKPOINT_EVERY = 1024
COMMITTER_LINGER_S = 5.0
"""How long an idle committer thread waits for the next event before it exits."""


class AuditError(Invalid):
    """The audit log cannot do what was asked; the message says what and how to fix it."""


class AuditNotFound(NotFound, AuditError):
    """No such entry, checkpoint, tile or subject key (or no log here yet)."""


class AuditUnavailable(Unavailable, AuditError):
    """The audit store cannot be reached or opened."""


@dataclass(frozen=True)
class LoggedEvent:
    """A stored event: its index, leaf hash, canonical bytes and a readable view (personal
    fields decrypted, or "erased" once the subject's key is gone)."""

    index: int
    leaf_hash: bytes
    entry: bytes
    view: dict[str, Any]


@dataclass
class _Pending:
    entry: bytes
    future: Future[Receipt] = field(default_factory=Future)


@dataclass
class _Batch:
    size: int = 0
    root: bytes = EMPTY_ROOT
    checkpoint: str = ""
    nodes: dict[NodeId, bytes] = field(default_factory=dict)


def _fingerprint(vkey: str) -> str:
    """`name+keyid` of a verifier key string: enough to tell two keys apart in a message."""
    return "+".join(vkey.split("+")[:2])


def check_retention(days: int) -> int:
    if days < RETENTION_MIN_DAYS:
        raise AuditError(
            f"audit retention of {days} days is below the minimum of {RETENTION_MIN_DAYS} days "
            f"(6 months, AI Act Art. 19/26); set {RETENTION_ENV} to {RETENTION_MIN_DAYS} or more"
        )
    return days


class AuditLog:
    """The audit log of one data directory (see docs/audit.md); open it with `AuditLog.open`."""

    def __init__(
        self,
        store: LogStore,
        keyring: KeyRing,
        subjects: SubjectKeys,
        retention_days: int,
        *,
        read_only: bool = False,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.subjects = subjects
        self.retention_days = retention_days
        self.read_only = read_only
        origin = store.get_meta("origin")
        if origin is None:
            if read_only:
                raise AuditNotFound("there is no audit log here yet; nothing has been logged")
            origin = self._key_name() or f"sovra.local/audit/{secrets.token_hex(6)}"
            origin = store.init_meta("origin", origin)
        self.origin = origin
        self._signer: NoteSigner | None = None
        if not read_only:
            if not keyring.key_path.exists() and store.latest_checkpoint() is not None:
                # A fresh key would sign on as if nothing happened; make the loss visible.
                raise AuditError(
                    f"the audit log {origin} has signed checkpoints but its signing key "
                    f"{keyring.key_path} is missing; restore it from backup or point "
                    f"$SOVRA_AUDIT_KEY at it"
                )
            try:
                self._signer = keyring.load_or_create(origin)
            except KeyFileError as exc:
                raise AuditError(str(exc)) from None
            if getattr(store, "shared", False):
                self._check_shared_key(self._signer)
        stored = store.get_meta("retention_days")
        if stored is not None and int(stored) > retention_days:
            # A log never lowers its retention; raising it sticks.
            self.retention_days = int(stored)
        elif stored != str(retention_days) and not read_only:
            store.set_meta("retention_days", str(retention_days))
        self._edge: tuple[int, dict[NodeId, bytes]] = (-1, {})
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._work = threading.Condition(self._lock)
        self._queue: list[_Pending] = []
        self._leader = False  # events are queued or being committed
        self._committer: threading.Thread | None = None  # running, or lingering for work
        self._closing = False

    def _check_shared_key(self, signer: NoteSigner) -> None:
        """Refuse to write a shared (PostgreSQL) log with a key other than the one its
        replicas sign with: the first writer records its public key in the log's meta, and
        checkpoints signed by another replica's own key would fail `sovra audit verify` on
        every node that does not trust it."""
        mine = str(signer.verifier)
        expected = self.store.init_meta(SIGNING_KEY_META, mine)
        if expected == mine:
            return
        raise AuditError(
            f"the shared audit log {self.origin} is signed by key {_fingerprint(expected)}, but "
            f"this replica's signing key {self.keyring.key_path} (from ${KEY_ENV}, [audit] "
            f"key_path or the default <home>/audit/keys/log.key) is "
            f"{_fingerprint(mine)}; give every replica the same key file via {KEY_ENV} or "
            "[audit] key_path (after `sovra audit rotate-key`, copy the new key to all of them)"
        )

    def _key_name(self) -> str | None:
        if self.keyring.key_path.exists():
            try:
                return NoteSigner.from_private_string(self.keyring.key_path.read_text()).name
            except (NoteError, ValueError, OSError):
                return None
        return None

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        home: Path,
        url: str | None = None,
        *,
        key_path: Path | None = None,
        retention_days: int | None = None,
        schema: str | None = None,
        read_only: bool = False,
    ) -> AuditLog:
        """Open (creating if needed) the log of data directory `home`.

        `url` (or $SOVRA_AUDIT_URL) selects PostgreSQL, in `schema` (or $SOVRA_AUDIT_SCHEMA,
        default `sovra_audit`); otherwise `<home>/audit/log.sqlite`. `read_only` needs no
        signing key (an auditor's copy): verify, show, export and prove work; appends do not.
        """
        if retention_days is None:
            env = os.environ.get(RETENTION_ENV)
            try:
                retention_days = int(env) if env else RETENTION_MIN_DAYS
            except ValueError:
                raise AuditError(f"{RETENTION_ENV}={env!r} is not a whole number of days") from None
        check_retention(retention_days)
        audit_dir = home / "audit"
        url = url or os.environ.get(URL_ENV) or None
        store: LogStore
        try:
            if url:
                from sovra.audit.pgstore import PostgresStore

                schema = schema or os.environ.get(SCHEMA_ENV) or "sovra_audit"
                store = PostgresStore(url, schema)
            else:
                store = SqliteStore(audit_dir / "log.sqlite")
        except StoreError as exc:
            raise AuditUnavailable(str(exc)) from None
        try:
            # With a PostgreSQL log the subject keys sit in its schema: every replica writing
            # the log must seal and erase with the same keys (docs/audit.md).
            subjects = (
                SubjectKeys.shared(url, schema)
                if url and schema
                else SubjectKeys(audit_dir / "subjects")
            )
            return cls(
                store,
                KeyRing(audit_dir / "keys", key_path),
                subjects,
                retention_days,
                read_only=read_only,
            )
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._closing = True
            self._work.notify_all()
        self.store.close()
        self.subjects.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- keys
    @property
    def public_key(self) -> str:
        """The current verifier key string (`name+id+key`) for offline receipt checks."""
        if self._signer is not None:
            return str(self._signer.verifier)
        trusted = self.keyring.trusted()
        if not trusted:
            raise AuditError(f"no trusted public key in {self.keyring.trusted_path}")
        return str(trusted[-1])

    def _writer(self) -> NoteSigner:
        if self._signer is None:
            raise AuditError("the audit log is open read-only; it cannot sign or append")
        return self._signer

    def public_keys(self) -> list[str]:
        """Every key this log ever signed with (current and rotated out)."""
        return [str(v) for v in self.keyring.trusted()]

    def rotate_key(self) -> str:
        """Switch to a fresh signing key; old checkpoints stay verifiable with old keys."""
        self._writer()
        self._signer = self.keyring.rotate(self.origin)
        if getattr(self.store, "shared", False):
            # Replicas still on the old key are refused at their next open.
            self.store.set_meta(SIGNING_KEY_META, str(self._signer.verifier))
        self.checkpoint()
        return self.public_key

    # ---------------------------------------------------------------- append
    def _sign(self, size: int, root: bytes) -> str:
        return sign_note(Checkpoint(self.origin, size, root).text(), self._writer())

    def _planner(
        self, leaves: Sequence[bytes], out: _Batch
    ) -> Callable[[int, NodeReader], AppendPlan]:
        def plan(size: int, read: NodeReader) -> AppendPlan:
            edge = compact_range(size)
            cached_size, cached = self._edge
            # Our own last commit left the tree at this size: its right edge is known, no read.
            got = cached if cached_size == size else read(edge)
            missing = [n for n in edge if n not in got]
            if missing:
                raise AuditError(
                    f"audit store lacks tree node {missing[0]}; run `sovra audit verify`"
                )
            stack = [(n[0], got[n]) for n in edge]
            nodes: dict[NodeId, bytes] = {}
            index = size
            for lh in leaves:
                level, h, i = 0, lh, index
                nodes[(0, i)] = h
                while stack and stack[-1][0] == level:
                    h = node_hash(stack.pop()[1], h)
                    level, i = level + 1, i >> 1
                    nodes[(level, i)] = h
                stack.append((level, h))
                index += 1
            root = fold_nodes([h for _, h in stack]) if stack else EMPTY_ROOT
            out.size, out.root, out.nodes = index, root, nodes
            out.checkpoint = self._sign(index, root)
            # Keep one checkpoint per block of CHECKPOINT_EVERY entries (the last one signed in
            # it) plus the latest: receipts carry their own checkpoint, and consistency proofs
            # can be built to any size, so the history need not hold every commit.
            drop = size if size and size // CHECKPOINT_EVERY == index // CHECKPOINT_EVERY else None
            return AppendPlan(nodes, out.checkpoint, drop)

        return plan

    def _commit(self, entries: Sequence[bytes]) -> tuple[int, _Batch]:
        batch = _Batch()
        first = self.store.append(entries, self._planner([leaf_hash(e) for e in entries], batch))
        # Remember the new right edge (committed, so it is what the store now holds). Another
        # process appending changes the size, which invalidates this cache.
        edge = compact_range(batch.size)
        old_size, old_edge = self._edge
        known = {**old_edge, **batch.nodes} if old_size == first else batch.nodes
        if all(n in known for n in edge):
            self._edge = (batch.size, {n: known[n] for n in edge})
        return first, batch

    def _receipts(self, first: int, entries: Sequence[bytes], batch: _Batch) -> list[Receipt]:
        plans = [inclusion_plan(first + i, batch.size) for i in range(len(entries))]
        have = batch.nodes
        needed = nodes_for({s for p in plans for s in p}) - have.keys()
        if needed:
            have = {**have, **self.store.get_nodes(needed)}
        memo: dict[tuple[int, int], bytes] = {}
        return [
            Receipt(
                first + i, have[(0, first + i)], batch.checkpoint, tuple(assemble(p, have, memo)), e
            )
            for i, (e, p) in enumerate(zip(entries, plans, strict=True))
        ]

    def _seal(self, event: AuditEvent) -> bytes:
        if event.subject is None:
            return seal(event, None, None)
        pseudonym, key = self.subjects.get_or_create(event.subject)
        return seal(event, pseudonym, key)

    def append_many(self, events: Sequence[AuditEvent]) -> list[Receipt]:
        """Append events in one transaction (one fsync); receipts come back after commit."""
        self._writer()
        entries = [self._seal(e) for e in events]
        receipts: list[Receipt] = []
        for i in range(0, len(entries), MAX_BATCH):
            chunk = entries[i : i + MAX_BATCH]
            first, batch = self._commit(chunk)
            receipts.extend(self._receipts(first, chunk, batch))
        return receipts

    def submit(self, event: AuditEvent) -> Future[Receipt]:
        """Queue one event; the future resolves to its receipt once the event is durable.

        Group commit: a committer thread takes everything queued (up to MAX_BATCH) into one
        transaction — one fsync, one signed checkpoint — so many concurrent requests, or one
        producer that does not wait per event, share the cost of a durable commit.
        """
        self._writer()
        item = _Pending(self._seal(event))
        with self._lock:
            self._queue.append(item)
            self._leader = True
            # A committer lingers after its last batch, so steady traffic does not start a
            # thread per event (that was ~4 % of a search request's samples in a py-spy
            # profile); is_alive() is False in a forked child, which must start its own.
            # Started under the lock: a thread created but not yet started is not alive, and
            # a second submit must not take it for gone and start another committer.
            committer = self._committer
            if committer is None or not committer.is_alive():
                self._committer = threading.Thread(
                    target=self._drain, name="sovra-audit-commit", daemon=True
                )
                self._committer.start()
            else:
                self._work.notify()
        return item.future

    def append(self, event: AuditEvent) -> Receipt:
        """Append one event; returns its receipt once it is durable. Thread-safe; concurrent
        callers are committed together (see `submit`)."""
        return self.submit(event).result()

    def _drain(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    if self._leader:
                        self._leader = False
                        self._idle.notify_all()
                    if self._closing or (
                        not self._work.wait(COMMITTER_LINGER_S) and not self._queue
                    ):
                        self._committer = None
                        return
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            self._lead(batch)

    def flush(self) -> None:
        """Wait until every submitted event is committed (or failed)."""
        with self._lock:
            while self._leader:
                self._idle.wait()

    def _lead(self, items: list[_Pending]) -> None:
        entries = [it.entry for it in items]
        try:
            first, batch = self._commit(entries)
            receipts = self._receipts(first, entries, batch)
        except BaseException as exc:
            for it in items:
                it.future.set_exception(exc)
            return
        for it, rec in zip(items, receipts, strict=True):
            it.future.set_result(rec)

    # ---------------------------------------------------------------- reading
    @property
    def size(self) -> int:
        return self.store.size()

    def checkpoint(self) -> str:
        """The latest signed checkpoint, signed now if the log is empty or the current key
        has not signed it yet (after a rotation)."""
        latest = self.store.latest_checkpoint()
        if self._signer is None:
            if latest is None:
                raise AuditError("the audit log has no signed checkpoint yet")
            return latest[1]
        if latest is None:
            note = self._sign(0, EMPTY_ROOT)
            self.store.put_checkpoint(0, note)
            return note
        size, note = latest
        try:
            open_note(note, [self._signer.verifier])
        except NoteError:
            note = add_signature(note, self._signer)
            self.store.put_checkpoint(size, note)
        return note

    def add_cosignature(self, cosigned: str) -> str:
        """Store a witness's cosignature (a checkpoint note with its extra signature line).

        The checkpoint must be one this log signed and the cosignature must verify with a key
        in witnesses.vkeys; the stored note gains the witness line.
        """
        self._writer()
        trusted = self.keyring.trusted()
        try:
            checkpoint, _ = open_checkpoint(cosigned, trusted, self.origin)
        except NoteError as exc:
            raise AuditError(f"cosigned checkpoint rejected: {exc}") from None
        stored = self.store.checkpoint_at(checkpoint.size)
        if stored is None:
            # Superseded checkpoints are not all kept; accept one whose root we can recompute.
            if checkpoint.size > self.size or self._root_at(checkpoint.size) != checkpoint.root:
                raise AuditError(
                    f"the cosigned checkpoint at size {checkpoint.size} is not this log's"
                )
            ours = {(v.name, v.key_id) for v in trusted}
            incoming = parse_note(cosigned)
            own = tuple(s for s in incoming.signatures if (s.name, s.key_id) in ours)
            stored = str(type(incoming)(incoming.text, own))
        if parse_note(stored).text != parse_note(cosigned).text:
            raise AuditError(
                f"this log has no checkpoint matching the cosigned one at size {checkpoint.size}"
            )
        witnesses = self.keyring.witnesses()
        try:
            _, good = open_note(cosigned, witnesses)
        except NoteError as exc:
            raise AuditError(f"no known witness cosignature verifies: {exc}") from None
        merged = parse_note(stored)
        have = {(s.name, s.key_id) for s in merged.signatures}
        extra = [
            s
            for s in parse_note(cosigned).signatures
            if (s.name, s.key_id) not in have
            and any((w.name, w.key_id) == (s.name, s.key_id) for w in good)
        ]
        note = str(type(merged)(merged.text, (*merged.signatures, *extra)))
        self.store.put_checkpoint(checkpoint.size, note)
        return note

    def tile(self, level: int, index: int, size: int | None = None) -> bytes:
        """The C2SP tlog-tiles tile `<level>/<index>` of the tree at `size` (default: now):
        up to 256 concatenated hashes of tree level 8·level, partial at the right edge. The
        node rows are these tiles unpacked, so a tile is one range read."""
        size = self.size if size is None else size
        width = min(256, max(0, (size >> (8 * level)) - index * 256))
        if width == 0:
            raise AuditNotFound(f"tile {level}/{index} does not exist in a tree of size {size}")
        return b"".join(self.store.node_range(8 * level, index * 256, index * 256 + width))

    def _root_at(self, size: int) -> bytes:
        edge = compact_range(size)
        nodes = self.store.get_nodes(edge)
        if len(nodes) != len(edge):
            raise AuditError("audit store lacks tree nodes; run `sovra audit verify`")
        return fold_nodes([nodes[n] for n in edge]) if edge else EMPTY_ROOT

    def _checkpoint_for(self, size: int | None) -> tuple[int, str]:
        if size is None:
            latest = self.store.latest_checkpoint()
            if latest is None or latest[0] == 0:
                raise AuditError("the audit log is empty")
            return latest
        note = self.store.checkpoint_at(size)
        if note is None:
            raise AuditNotFound(f"no checkpoint at tree size {size}")
        return size, note

    def prove(self, leaf: int, size: int | None = None) -> Receipt:
        """A receipt for entry `leaf` against the latest checkpoint (or the one at `size`)."""
        return self.prove_many([leaf], size)[0]

    def prove_many(self, leaves: Sequence[int], size: int | None = None) -> list[Receipt]:
        tree_size, note = self._checkpoint_for(size)
        for leaf in leaves:
            if not 0 <= leaf < tree_size:
                raise AuditNotFound(f"entry {leaf} does not exist; the log has {tree_size} entries")
        plans = [inclusion_plan(leaf, tree_size) for leaf in leaves]
        needed = nodes_for({s for p in plans for s in p})
        nodes = self.store.get_nodes(needed)
        if needed - nodes.keys():
            raise AuditError("audit store lacks tree nodes; run `sovra audit verify`")
        wanted = set(leaves)
        entries: dict[int, bytes] = {}
        if len(wanted) == 1:
            entries = dict(self.store.entries(leaves[0], leaves[0] + 1))
        else:
            for idx, data in self.store.entries(min(wanted), max(wanted) + 1):
                if idx in wanted:
                    entries[idx] = data
        out = []
        memo: dict[tuple[int, int], bytes] = {}
        for leaf, p in zip(leaves, plans, strict=True):
            if leaf not in entries:
                raise AuditError(
                    f"entry {leaf} is missing from the store; run `sovra audit verify`"
                )
            data = entries[leaf]
            out.append(Receipt(leaf, leaf_hash(data), note, tuple(assemble(p, nodes, memo)), data))
        return out

    def prove_consistency(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof between two tree sizes (default: to the current size)."""
        size2 = self.size if size2 is None else size2
        if not 0 < size1 <= size2 <= self.size:
            raise AuditError(f"no consistency proof from size {size1} to {size2}")
        if size1 == size2:
            return []
        plan = consistency_plan(size1, size2)
        nodes = self.store.get_nodes(nodes_for(plan))
        return assemble(plan, nodes)

    def _key_cache(self) -> Callable[[str], bytes | None]:
        cache: dict[str, bytes | None] = {}

        def get(pseudonym: str) -> bytes | None:
            if pseudonym not in cache:
                cache[pseudonym] = self.subjects.key_for(pseudonym)
            return cache[pseudonym]

        return get

    def events(
        self,
        *,
        since: datetime | None = None,
        actor: str | None = None,
        action: str | None = None,
        start: int = 0,
    ) -> Iterator[LoggedEvent]:
        """Stored events in order, personal fields decrypted or shown as "erased"."""
        keys = self._key_cache()
        since_s = None if since is None else format_time(since)
        for idx, data in self.store.entries(start, self.size):
            try:
                record = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = {"action": "?", "actor": "?", "time": "", "corrupt": True}
            if action is not None and record.get("action") != action:
                continue
            if since_s is not None and str(record.get("time", "")) < since_s:
                continue
            sealed = record.get("sealed")
            key = keys(str(sealed.get("subject"))) if isinstance(sealed, dict) else None
            view = unseal(record, key)
            if actor is not None and view.get("actor") != actor:
                continue
            yield LoggedEvent(idx, leaf_hash(data), data, view)

    # ---------------------------------------------------------------- erasure
    def erase_subject(self, subject: str, actor: str = "system:erase") -> Receipt:
        """Crypto-shred `subject`: record the erasure, then destroy the subject's key."""
        pseudonym = self.subjects.pseudonym(subject)
        if pseudonym is None:
            raise AuditNotFound(
                "no key for this subject: nothing was logged for it, or it is already erased"
            )
        receipt = self.append(
            AuditEvent(
                actor=actor,
                action="erase",
                details={"subject": pseudonym, "method": "crypto-shredding"},
            )
        )
        self.subjects.destroy(subject)
        return receipt

    # ---------------------------------------------------------------- verification
    def verify(
        self, progress: Callable[[int], None] | None = None, *, anchor: str | None = None
    ) -> VerifyReport:
        """Recompute the whole tree from the entries and check it against every stored node
        and every signed checkpoint (with the keys from the key files, not from the store).

        `anchor` is a signed checkpoint held outside the store (from a receipt or a witness):
        the log must still contain that exact tree, which catches a truncation or rewrite done
        consistently across entries, nodes and stored checkpoints.
        """
        try:
            trusted = self.keyring.trusted()
            witnesses = self.keyring.witnesses()
        except KeyFileError as exc:
            return VerifyReport(False, self.size, 0, EMPTY_ROOT, str(exc))
        return verify_store(self.store, self.origin, trusted, progress, anchor, witnesses)
