"""`sovra audit …` and `sovra erase --subject`: the audit log from the command line.

`app` is mounted by the root CLI as `sovra audit`; `erase_command` is mounted as `sovra erase`.
The log is opened as sovra.toml's `[audit]` table says (`open_audit_log`); $SOVRA_AUDIT_URL
still selects PostgreSQL directly.
"""

from __future__ import annotations

import csv
import json as jsonlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from sovra.audit.keys import KeyFileError, read_vkeys
from sovra.audit.log import URL_ENV, AuditError, AuditLog, LoggedEvent
from sovra.audit.note import NoteError, NoteVerifier
from sovra.audit.receipt import Receipt, ReceiptError, verify_receipt
from sovra.cli.kit import JsonOpt, console, emit_json, fail, out, progress_bar, state
from sovra.config import Config, ConfigError
from sovra.workspace import open_audit_log

PublicKeyOpt = Annotated[
    Path | None,
    typer.Option("--public-key", help="File with the log's verifier key(s), one per line."),
]

app = typer.Typer(
    help="The signed, tamper-evident audit log: verify, show, export, prove.",
    no_args_is_help=True,
)


def _home(ctx: typer.Context) -> Path:
    try:
        return state(ctx).config.home
    except ConfigError as exc:
        fail(str(exc))


def _log_in_postgres(config: Config) -> bool:
    """Whether the log lives in PostgreSQL ($SOVRA_AUDIT_URL, [audit] database_url_env or the
    shared [workspace] database_url), so there is no local file to look for."""
    return bool(
        os.environ.get(URL_ENV) or config.audit.database_url_env or config.workspace.database_url
    )


@contextmanager
def _log(ctx: typer.Context, *, create: bool = False, write: bool = True) -> Iterator[AuditLog]:
    """Open the log; `write=False` needs no signing key (auditors verify with public keys)."""
    try:
        config = state(ctx).config
    except ConfigError as exc:
        fail(str(exc))
    home = config.home
    remote = _log_in_postgres(config)
    if not create and not remote and not (home / "audit" / "log.sqlite").exists():
        fail(
            f"no audit log in {home}; nothing has been logged yet (or set {URL_ENV} for server mode)"
        )
    try:
        log = open_audit_log(config, read_only=not write)
    except (AuditError, KeyFileError) as exc:
        fail(str(exc))
    try:
        yield log
    except (AuditError, KeyFileError, NoteError) as exc:
        fail(str(exc))
    finally:
        log.close()


def _held_checkpoint(path: Path) -> str:
    """A checkpoint note from a file holding either the note or a receipt (JSON)."""
    if not path.is_file():
        fail(f"checkpoint file {path} not found")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            return Receipt.from_json(text).checkpoint
        except ReceiptError as exc:
            fail(f"{path}: {exc}")
    return text


@app.command()
def verify(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="A checkpoint (or receipt) kept outside the log: the log must still contain it.",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Recompute the whole log and check it against every stored node and signed checkpoint."""
    anchor = None if checkpoint is None else _held_checkpoint(checkpoint)
    with _log(ctx, write=False) as log:
        total = log.size
        with progress_bar("verifying audit log", total, enabled=not json) as advance:
            report = log.verify(progress=advance, anchor=anchor)
    result = {
        "ok": report.ok,
        "size": report.size,
        "checkpoints": report.checkpoints,
        "root": report.root.hex(),
        "problem": report.problem,
        "bad_index": report.bad_index,
    }
    if json:
        emit_json(result)
        if not report.ok:
            raise typer.Exit(1)
        return
    if not report.ok:
        fail(f"audit log verification failed: {report.problem}")
    out.print(f"audit log OK: {report.size} entries, {report.checkpoints} signed checkpoints")


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--since {value!r} is not an ISO date or time, e.g. 2026-01-31 or 2026-01-31T12:00Z")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _row(ev: LoggedEvent) -> dict[str, Any]:
    return {"index": ev.index, "leaf_hash": ev.leaf_hash.hex(), **ev.view}


@app.command()
def show(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Only events at or after this time.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only events by this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Only events with this action.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 100,
    json: JsonOpt = False,
) -> None:
    """List logged events (personal fields decrypted, or shown as erased)."""
    when = _parse_since(since)
    with _log(ctx, write=False) as log:
        rows = []
        for ev in log.events(since=when, actor=actor, action=action):
            rows.append(_row(ev))
            if len(rows) >= limit:
                break
    if json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(
        "#", "time", "actor", "action", "decision", "outcome", "endpoint", "policies", "resources"
    )
    for r in rows:
        table.add_row(
            str(r["index"]),
            str(r.get("time", "")),
            str(r.get("actor", "")),
            str(r.get("action", "")),
            str(r.get("decision") or ""),
            str(r.get("outcome", "")),
            str(r.get("endpoint") or ""),
            ", ".join(r.get("policy_ids") or []),
            str(len(r.get("resources") or [])),
        )
    out.print(table)


CSV_FIELDS = [
    "index",
    "time",
    "actor",
    "subject",
    "action",
    "outcome",
    "decision",
    "policy_ids",
    "endpoint",
    "jurisdiction",
    "request_id",
    "resources",
    "details",
    "personal",
    "leaf_hash",
    "tree_size",
    "inclusion_proof",
    "checkpoint",
]


@app.command()
def export(
    ctx: typer.Context,
    format: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout).")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Every event with its inclusion proof against the latest signed checkpoint."""
    if format not in ("jsonl", "csv"):
        fail(f"--format {format!r} is not supported; use jsonl or csv")
    with _log(ctx, write=False) as log:
        size = log.size
        if size == 0:
            fail("the audit log is empty; nothing to export")
        sink = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        try:
            writer = csv.DictWriter(sink, CSV_FIELDS) if format == "csv" else None
            if writer:
                writer.writeheader()
            chunk: list[LoggedEvent] = []
            with progress_bar("exporting audit log", size, enabled=output is not None) as advance:
                for ev in log.events():
                    chunk.append(ev)
                    if len(chunk) == 1000:
                        _write(sink, writer, chunk, log.prove_many([e.index for e in chunk], size))
                        advance(len(chunk))
                        chunk = []
                if chunk:
                    _write(sink, writer, chunk, log.prove_many([e.index for e in chunk], size))
                    advance(len(chunk))
        finally:
            if output:
                sink.close()
    if output is not None:
        if json:
            emit_json({"path": str(output), "entries": size, "format": format})
        else:
            out.print(f"exported {size} entries to {output}")


def _write(
    sink: Any,
    writer: csv.DictWriter[str] | None,
    events: list[LoggedEvent],
    receipts: list[Receipt],
) -> None:
    for ev, rec in zip(events, receipts, strict=True):
        if writer is None:
            line = {"index": ev.index, "event": ev.view, "receipt": rec.to_dict()}
            sink.write(jsonlib.dumps(line, ensure_ascii=False) + "\n")
            continue
        v = ev.view
        d = rec.to_dict()
        writer.writerow(
            {
                "index": ev.index,
                "time": v.get("time"),
                "actor": v.get("actor"),
                "subject": v.get("subject", ""),
                "action": v.get("action"),
                "outcome": v.get("outcome"),
                "decision": v.get("decision") or "",
                "policy_ids": jsonlib.dumps(v.get("policy_ids", [])),
                "endpoint": v.get("endpoint") or "",
                "jurisdiction": v.get("jurisdiction") or "",
                "request_id": v.get("request_id") or "",
                "resources": jsonlib.dumps(v.get("resources", [])),
                "details": jsonlib.dumps(v.get("details", {}), ensure_ascii=False),
                "personal": jsonlib.dumps(v.get("personal", {}), ensure_ascii=False),
                "leaf_hash": d["leaf_hash"],
                "tree_size": rec.checkpoint.split("\n")[1],
                "inclusion_proof": " ".join(d["inclusion_proof"]),
                "checkpoint": rec.checkpoint,
            }
        )


@app.command()
def prove(
    ctx: typer.Context,
    leaf: Annotated[int, typer.Option("--leaf", min=0, help="Entry index.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the receipt here.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """A receipt (signed checkpoint + inclusion proof) for one entry."""
    with _log(ctx, write=False) as log:
        receipt = log.prove(leaf)
    if output is not None:
        output.write_text(receipt.to_json(), encoding="utf-8")
        if json:
            emit_json({"path": str(output), "index": leaf})
        else:
            out.print(f"receipt for entry {leaf} written to {output}")
        return
    emit_json(receipt.to_dict())


@app.command("verify-receipt")
def verify_receipt_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Receipt JSON file.")],
    public_key: PublicKeyOpt = None,
    origin: Annotated[str | None, typer.Option(help="Require this log origin.")] = None,
    json: JsonOpt = False,
) -> None:
    """Check a receipt offline with only the log's public key."""
    if not file.is_file():
        fail(f"receipt file {file} not found")
    keys = _trusted_keys(ctx, public_key)
    try:
        result = verify_receipt(file.read_bytes(), keys, origin=origin)
    except ReceiptError as exc:
        fail(f"receipt {file} is NOT valid: {exc}")
    summary = {
        "valid": True,
        "origin": result.origin,
        "index": result.index,
        "tree_size": result.tree_size,
        "leaf_hash": result.leaf_hash.hex(),
        "signed_by": result.signed_by,
        "event": result.record,
    }
    if json:
        emit_json(summary)
    else:
        out.print(
            f"receipt valid: entry {result.index} is in {result.origin} "
            f"at tree size {result.tree_size}"
        )


def _trusted_keys(ctx: typer.Context, public_key: Path | None) -> list[NoteVerifier]:
    """The verifier keys from --public-key, else from <home>/audit/keys/trusted.vkeys."""
    key_file = public_key or _home(ctx) / "audit" / "keys" / "trusted.vkeys"
    if not key_file.is_file():
        fail(f"public key file {key_file} not found; pass --public-key FILE")
    try:
        keys = read_vkeys(key_file)
    except KeyFileError as exc:
        fail(str(exc))
    if not keys:
        fail(f"{key_file} holds no verifier key")
    return keys


@app.command("verify-report")
def verify_report_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The report's JSON evidence bundle.")],
    public_key: PublicKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check a compliance report offline: the checkpoint's signature, every entry's inclusion
    proof, and that every figure follows from the entries it lists. Exit 1 if anything fails."""
    from sovra.governance.evidence import verify_bundle

    if not file.is_file():
        fail(f"report file {file} not found")
    keys = _trusted_keys(ctx, public_key)
    try:
        bundle = jsonlib.loads(file.read_text(encoding="utf-8"))
    except (jsonlib.JSONDecodeError, UnicodeDecodeError) as exc:
        fail(f"{file} is not a JSON evidence bundle (use --format json): {exc}")
    result = verify_bundle(bundle, keys)
    if json:
        emit_json(result.to_dict())
    elif result.ok:
        out.print(
            f"report verified: {result.figures} figures follow from {result.entries} entries, all"
            f" in {result.origin} at tree size {result.tree_size}"
        )
    else:
        console.print("[bold red]report verification FAILED:[/]", highlight=False)
        for problem in result.problems:
            console.print(f"  - {problem}", highlight=False, markup=False)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def checkpoint(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Print the latest signed checkpoint (C2SP tlog-checkpoint) and the log's public key."""
    with _log(ctx, create=True) as log:
        note = log.checkpoint()
        keys = log.public_keys()
        current = log.public_key
    if json:
        lines = note.split("\n")
        emit_json(
            {
                "origin": lines[0],
                "size": int(lines[1]),
                "root": lines[2],
                "checkpoint": note,
                "public_key": current,
                "public_keys": keys,
            }
        )
        return
    sys.stdout.write(note)
    sys.stdout.write(f"\npublic key: {current}\n")


@app.command("rotate-key")
def rotate_key(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Start signing with a new key; the old public key stays trusted for old checkpoints."""
    with _log(ctx, create=True) as log:
        new_key = log.rotate_key()
        keys = log.public_keys()
    if json:
        emit_json({"public_key": new_key, "public_keys": keys})
    else:
        out.print(f"new signing key: {new_key}")


@app.command()
def cosign(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Checkpoint note carrying a witness cosignature.")],
    json: JsonOpt = False,
) -> None:
    """Store a witness cosignature (key listed in <home>/audit/keys/witnesses.vkeys)."""
    if not file.is_file():
        fail(f"cosigned checkpoint file {file} not found")
    with _log(ctx) as log:
        note = log.add_cosignature(file.read_text(encoding="utf-8"))
    if json:
        emit_json({"checkpoint": note})
    else:
        sys.stdout.write(note)


def erase_command(
    ctx: typer.Context,
    subject: Annotated[str, typer.Option("--subject", help="The data subject (e.g. a user id).")],
    json: JsonOpt = False,
) -> None:
    """Erase a data subject from every store: crypto-shred their audit fields (GDPR Art. 17).

    Mount with `app.command("erase")(erase_command)`. The subject's events stay in the log
    (proofs still verify) but their personal fields read as "erased" from then on; the other
    stores of the data dir (directory, workflow runs and votes, action outcomes, feedback,
    usage, credentials) are rewritten without them (docs/audit.md lists each).
    """
    from sovra.audit.log import AuditNotFound
    from sovra.cli.erasure import erase_stores

    try:
        config = state(ctx).config
    except ConfigError as exc:
        fail(str(exc))
    stores = erase_stores(config, subject)
    receipt: Receipt | None = None
    remote = _log_in_postgres(config)
    if remote or (config.home / "audit" / "log.sqlite").exists():
        with _log(ctx) as log:
            try:
                receipt = log.erase_subject(subject)
            except AuditNotFound:
                if not stores:
                    raise
    elif not stores:
        fail(f"nothing to erase for this subject in {config.home}")
    if json:
        emit_json(
            {
                "erased": True,
                "index": receipt.index if receipt else None,
                "receipt": receipt.to_dict() if receipt else None,
                "stores": stores,
            }
        )
        return
    if receipt is not None:
        out.print(f"subject erased: its key is destroyed; erasure logged as entry {receipt.index}")
    else:
        out.print("subject erased: nothing of it was in the audit log")
    for name, changed in stores.items():
        out.print(f"  {name}: {changed}")
