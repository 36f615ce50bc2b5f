"""The evidence bundle behind a compliance report, and its offline verifier.

A bundle (`sovra.governance.evidence/v1`, JSON) names one signed checkpoint of the audit log and
carries every log entry of the report's period with its inclusion proof against that checkpoint,
plus the entries just outside the period (so a shortened range shows). Each figure is *defined*
by a selector over entries and a measure (`count`, `resources`, `sum:details.X`, decision times);
its value and the leaf indexes that back it are computed by `compute_figure`, which the verifier
runs again on the proven entries. So an auditor with the log's public key checks, offline, that
the checkpoint is signed, that every entry is in the log, and that every figure follows from them.

Entries are the log's stored leaves: personal fields stay sealed (encrypted) in them, so a
bundle holds no query text or names, only hashes, pseudonyms and the decision records.
"""

from __future__ import annotations

import base64
import binascii
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sovra.audit.event import format_time
from sovra.audit.merkle import leaf_hash
from sovra.audit.note import NoteError, NoteVerifier, open_checkpoint
from sovra.audit.verify import verify_inclusion
from sovra.errors import Invalid

FORMAT = "sovra.governance.evidence/v1"
DECISION_OUTCOMES = ("approved", "rejected")
"""Vote outcomes that end an approval: the time to decision runs from the request to these."""

Record = Mapping[str, Any]


class EvidenceError(Invalid):
    """An evidence bundle is malformed (not a verification failure: that is a result)."""


def period_bounds(since: datetime | None, until: datetime | None) -> tuple[str, str | None]:
    """The period as the log's own time strings (RFC 3339 UTC), which compare as text."""
    return ("" if since is None else format_time(since)), (
        None if until is None else format_time(until)
    )


def in_period(record: Record, since: str, until: str | None) -> bool:
    time = str(record.get("time", ""))
    return time >= since and (until is None or time < until)


def _field(record: Record, path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _one_of(wanted: Any, value: Any) -> bool:
    if isinstance(wanted, list):
        return value in wanted
    return bool(value == wanted)


def matches(select: Mapping[str, Any], record: Record) -> bool:
    """Whether an entry is one a figure counts.

    Keys: `action`, `outcome`, `decision`, `endpoint`, `jurisdiction` (a value, or a list of
    allowed values), `policy_id` (in the entry's policy ids), `source` (a resource of that
    source, i.e. an id starting `<source>:`), `details.<key>` (equal, or one of a list),
    `generation` (shorthand for `details.generation`), `no_policy_ids` (true: the entry names no
    policy, e.g. a denial by the workflow engine rather than by a Cedar rule).
    """
    for key, wanted in select.items():
        if key == "policy_id":
            if wanted not in (record.get("policy_ids") or []):
                return False
        elif key == "no_policy_ids":
            if bool(record.get("policy_ids")) == bool(wanted):
                return False
        elif key == "source":
            prefix = f"{wanted}:"
            if not any(str(r.get("id", "")).startswith(prefix) for r in _resources(record)):
                return False
        elif key.startswith("details."):
            if not _one_of(wanted, _field(record, key)):
                return False
        elif key == "generation":
            if not _one_of(wanted, _field(record, "details.generation")):
                return False
        elif not _one_of(wanted, record.get(key)):
            return False
    return True


def _resources(record: Record) -> list[Mapping[str, Any]]:
    res = record.get("resources")
    return [r for r in res if isinstance(r, Mapping)] if isinstance(res, list) else []


def _seconds(time: str) -> float:
    return datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()


def _decision_times(records: Sequence[tuple[int, Record]]) -> tuple[list[float], list[int]]:
    """Seconds from each approval request to the vote that decided it, and the leaves used."""
    asked: dict[str, tuple[int, str]] = {}
    times: list[float] = []
    used: list[int] = []
    for index, rec in records:
        run = str(_field(rec, "details.run_id") or "")
        if rec.get("action") == "flow.approval.request":
            asked[run] = (index, str(rec.get("time", "")))
        elif rec.get("outcome") in DECISION_OUTCOMES and run in asked:
            start_index, start = asked.pop(run)
            times.append(round(_seconds(str(rec.get("time", ""))) - _seconds(start), 3))
            used.extend((start_index, index))
    return times, sorted(used)


def _measure(measure: str, records: Sequence[tuple[int, Record]]) -> tuple[float | int, list[int]]:
    leaves = [i for i, _ in records]
    if measure == "count":
        return len(records), leaves
    if measure == "resources":
        return sum(len(_resources(r)) for _, r in records), leaves
    if measure.startswith("resources_of:"):
        prefix = measure.removeprefix("resources_of:") + ":"
        total = sum(
            1
            for _, r in records
            for res in _resources(r)
            if str(res.get("id", "")).startswith(prefix)
        )
        return total, leaves
    if measure.startswith("sum:"):
        path = measure.removeprefix("sum:")
        total = 0
        for _, r in records:
            value = _field(r, path)
            if isinstance(value, int) and not isinstance(value, bool):
                total += value
        return total, leaves
    if measure in ("decision_seconds_median", "decision_seconds_max", "decisions"):
        times, used = _decision_times(records)
        if measure == "decisions":
            return len(times), used
        if not times:
            return 0, used
        value = statistics.median(times) if measure.endswith("median") else max(times)
        return round(value, 1), used
    raise EvidenceError(f"unknown figure measure {measure!r}")


def compute_figure(
    select: Mapping[str, Any], measure: str, records: Iterable[tuple[int, Record]]
) -> tuple[float | int, list[int]]:
    """(value, backing leaf indexes) of a figure over `records` (index, stored record)."""
    chosen = [(i, r) for i, r in records if matches(select, r)]
    return _measure(measure, chosen)


@dataclass
class Figure:
    """One number in the report, with what defines it and the entries that back it."""

    id: str
    label: str
    select: dict[str, Any]
    measure: str = "count"
    value: float | int = 0
    leaves: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class ProvenEntry:
    index: int
    record: dict[str, Any]


@dataclass
class BundleCheck:
    """What `verify_bundle` found: ok only when every check passed."""

    ok: bool = True
    problems: list[str] = field(default_factory=list)
    origin: str = ""
    tree_size: int = 0
    entries: int = 0
    figures: int = 0

    def fail(self, problem: str) -> None:
        self.ok = False
        if len(self.problems) < 50:
            self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _verifiers(keys: Sequence[str] | Sequence[NoteVerifier]) -> list[NoteVerifier]:
    out: list[NoteVerifier] = []
    for key in keys:
        if isinstance(key, NoteVerifier):
            out.append(key)
        elif key.strip() and not key.strip().startswith("#"):
            out.append(NoteVerifier.parse(key.strip()))
    return out


def _prove(item: object, size: int, root: bytes, check: BundleCheck) -> ProvenEntry | None:
    if not isinstance(item, Mapping):
        check.fail("an evidence entry is not an object")
        return None
    index = item.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        check.fail("an evidence entry has no integer index")
        return None
    entry_text, proof = item.get("entry"), item.get("proof")
    if not isinstance(entry_text, str) or not isinstance(proof, list):
        check.fail(f"entry {index}: needs a base64 entry and a proof list")
        return None
    try:
        entry = base64.b64decode(entry_text, validate=True)
        hashes = [base64.b64decode(str(h), validate=True) for h in proof]
        verify_inclusion(index, size, leaf_hash(entry), hashes, root)
        record = json.loads(entry)
    except (binascii.Error, ValueError) as exc:
        # ProofError is a ValueError: a wrong proof, like bad base64, names the entry.
        check.fail(f"entry {index}: {exc}")
        return None
    if not isinstance(record, dict):
        check.fail(f"entry {index}: not a JSON object")
        return None
    return ProvenEntry(index, record)


def verify_bundle(
    bundle: object, public_keys: Sequence[str] | Sequence[NoteVerifier]
) -> BundleCheck:
    """Check a report's evidence offline: the checkpoint's signature by a trusted key, every
    entry's inclusion proof, that the entries cover the whole period, and that every figure's
    value and backing leaves are what its definition gives on the proven entries."""
    check = BundleCheck()
    if not isinstance(bundle, Mapping) or bundle.get("format") != FORMAT:
        check.fail(f"not an evidence bundle: format must be {FORMAT!r}")
        return check
    verification = bundle.get("verification")
    if not isinstance(verification, Mapping) or verification.get("ok") is not True:
        problem = verification.get("problem") if isinstance(verification, Mapping) else None
        check.fail(f"the audit log failed verification when the report was made: {problem}")
        return check
    log = bundle.get("log")
    note = log.get("checkpoint") if isinstance(log, Mapping) else None
    if not isinstance(note, str):
        check.fail("the bundle names no signed checkpoint")
        return check
    try:
        checkpoint, _ = open_checkpoint(note, _verifiers(public_keys))
    except (NoteError, ValueError) as exc:
        check.fail(f"checkpoint signature: {exc}")
        return check
    check.origin, check.tree_size = checkpoint.origin, checkpoint.size
    evidence = bundle.get("evidence")
    if not isinstance(evidence, Mapping):
        check.fail("the bundle has no evidence section")
        return check
    first, end = evidence.get("first"), evidence.get("end")
    if not isinstance(first, int) or not isinstance(end, int) or not 0 <= first <= end:
        check.fail("evidence range is malformed")
        return check
    if end > checkpoint.size:
        check.fail(f"evidence range ends at {end}, beyond the checkpoint's {checkpoint.size}")
    period = bundle.get("period")
    since = str(period.get("since_time") or "") if isinstance(period, Mapping) else ""
    until_raw = period.get("until_time") if isinstance(period, Mapping) else None
    until = None if until_raw is None else str(until_raw)
    proven: list[ProvenEntry] = []
    entries = evidence.get("entries")
    for item in entries if isinstance(entries, list) else []:
        p = _prove(item, checkpoint.size, checkpoint.root, check)
        if p is not None:
            proven.append(p)
    check.entries = len(proven)
    indexes = [p.index for p in proven]
    if indexes != list(range(first, end)):
        check.fail(f"the evidence does not hold every entry {first}..{end - 1} exactly once")
    _check_bounds(evidence, first, end, checkpoint.size, checkpoint.root, since, until, check)
    records = [(p.index, p.record) for p in proven if in_period(p.record, since, until)]
    figures = bundle.get("figures")
    for fig in figures if isinstance(figures, list) else []:
        _check_figure(fig, records, check)
        check.figures += 1
    return check


def _check_bounds(
    evidence: Mapping[str, Any],
    first: int,
    end: int,
    size: int,
    root: bytes,
    since: str,
    until: str | None,
    check: BundleCheck,
) -> None:
    """The entries just before and after the range must lie outside the period (or not exist):
    otherwise entries of the period could have been left out of the report."""
    before, after = evidence.get("before"), evidence.get("after")
    if first > 0:
        p = _prove(before, size, root, check) if before is not None else None
        if p is None or p.index != first - 1 or str(p.record.get("time", "")) >= since:
            check.fail(f"entry {first - 1}, just before the range, is missing or in the period")
    if end < size:
        p = _prove(after, size, root, check) if after is not None else None
        if p is None or p.index != end or until is None or str(p.record.get("time", "")) < until:
            check.fail(f"entry {end}, just after the range, is missing or in the period")


def _check_figure(fig: object, records: Sequence[tuple[int, Record]], check: BundleCheck) -> None:
    if not isinstance(fig, Mapping):
        check.fail("a figure is not an object")
        return
    name = str(fig.get("id", "?"))
    select, measure = fig.get("select"), fig.get("measure")
    if not isinstance(select, Mapping) or not isinstance(measure, str):
        check.fail(f"figure {name}: no definition")
        return
    try:
        value, leaves = compute_figure(select, measure, records)
    except EvidenceError as exc:
        check.fail(f"figure {name}: {exc}")
        return
    if fig.get("value") != value:
        check.fail(f"figure {name}: the report says {fig.get('value')}, the entries give {value}")
    if fig.get("leaves") != leaves:
        check.fail(f"figure {name}: its backing entries are not the ones its definition selects")
    if measure == "count" and fig.get("value") != len(fig.get("leaves") or []):
        check.fail(f"figure {name}: the count does not equal the number of backing entries")
