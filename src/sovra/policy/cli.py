"""`sovra policy check|test` and `sovra endpoint list|show|test` (mounted by sovra.cli).

The commands read the same policies, endpoints and directory as the running system, so
`policy check` answers exactly what a request would get, with the rule that decided it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from sovra.clikit import emit_json, fail, out, state
from sovra.config import Config, ConfigError, EndpointConfig
from sovra.domain import Principal
from sovra.policy.engine import ACTIONS, DEFAULT_DENY, PolicyEngine, PolicyError
from sovra.policy.table import (
    DocumentSpec,
    Labelled,
    Resolver,
    TableError,
    WorkflowSpec,
    build_request,
    load_table,
    run_table,
)

policy_app = typer.Typer(
    help="Cedar policies: explain a decision, run a decision table.", no_args_is_help=True
)
endpoint_app = typer.Typer(help="Model endpoints: where data may be sent.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(message: str) -> NoReturn:
    """clikit.fail with the message escaped: Cedar and TOML errors contain [brackets]."""
    fail(escape(message))


def _config(ctx: typer.Context) -> Config:
    try:
        return state(ctx).config
    except ConfigError as exc:
        _fail(str(exc))


def _engine(config: Config) -> PolicyEngine:
    try:
        return PolicyEngine.for_home(config.home)
    except PolicyError as exc:
        _fail(f"policies in {config.home / 'policies'}: {exc}")


def _principal(config: Config, user: str, groups: list[str] | None) -> Principal:
    if groups:  # an ad-hoc principal: lets an officer ask "what if" without a directory entry
        return Principal(user, frozenset(groups))
    from sovra.directory import Directory, DirectoryError

    try:
        return Directory.in_home(config.home).principal(user)
    except DirectoryError as exc:
        _fail(str(exc))


def _document(config: Config, doc_id: str) -> DocumentSpec:
    from sovra.sources.labels import resolve_labels

    source_name, _, external = doc_id.partition(":")
    try:
        source = config.source(source_name)
    except ConfigError as exc:
        raise PolicyError(f"document {doc_id!r}: {exc}") from None
    labels = resolve_labels(
        path=external,
        access=source.access,
        classification=source.classification,
        residency=source.residency,
        rules=source.rules,
        scale=config.scale,
    )
    return DocumentSpec(
        source=source_name,
        access=labels.access,
        classification=labels.classification,
        residency=labels.residency,
    )


def config_resolver(config: Config, document: str | None = None) -> Resolver:
    """Resources as the configuration describes them (sources, endpoints).

    Raises `PolicyError` when `document` names a source the configuration does not have.
    """
    sources = {
        s.name: Labelled(access=s.access, classification=s.classification, residency=s.residency)
        for s in config.sources
    }
    documents = {document: _document(config, document)} if document else {}
    return Resolver(
        config.scale,
        config.workspace.region,
        sources,
        documents,
        {},
        {e.name: e for e in config.endpoints},
    )


@policy_app.command("check")
def check(
    ctx: typer.Context,
    as_user: Annotated[str, typer.Option("--as", help="The user (from the directory).")],
    action: Annotated[str, typer.Option("--action", help=f"One of: {', '.join(ACTIONS)}.")],
    resource: Annotated[
        str,
        typer.Option(
            "--resource",
            help="workspace, source:<name>, document:<source>:<id>, endpoint:<name>,"
            " workflow:<name>",
        ),
    ] = "workspace",
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="Act as an ad-hoc user in these groups (repeatable)."),
    ] = None,
    workflow_access: Annotated[
        list[str] | None,
        typer.Option("--workflow-access", help="Access list of the workflow resource."),
    ] = None,
    classification: Annotated[
        str, typer.Option(help="send_to_endpoint: strictest classification of the data.")
    ] = "internal",
    residency: Annotated[
        list[str] | None, typer.Option(help="send_to_endpoint: residency of the data.")
    ] = None,
    pii: Annotated[bool, typer.Option("--pii", help="send_to_endpoint: data holds PII.")] = False,
    category: Annotated[
        list[str] | None, typer.Option(help="send_to_endpoint: data category, e.g. hr.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Explain one decision: allow or deny, which policy decided it, and what would allow it."""
    config = _config(ctx)
    engine = _engine(config)
    principal = _principal(config, as_user, group)
    kind, _, name = resource.partition(":")
    try:
        resolver = config_resolver(config, name if kind == "document" else None)
        if kind == "workflow":
            resolver.workflows[name] = WorkflowSpec(access=tuple(workflow_access or ()))
        request = build_request(
            resolver,
            principal,
            action,
            resource,
            classification=classification,
            residency=tuple(residency or ()),
            pii=pii,
            categories=tuple(category or ()),
        )
        verdict = engine.decide(request)
    except PolicyError as exc:
        _fail(str(exc))
    if json_out:
        emit_json(
            {
                "principal": principal.id,
                "groups": sorted(principal.groups),
                "action": action,
                "resource": resource,
                "decision": verdict.decision,
                "policy_ids": list(verdict.policy_ids),
                "policy_version": verdict.version,
                "advice": list(verdict.advice),
                "errors": list(verdict.errors),
            }
        )
    else:
        colour = "green" if verdict.allowed else "red"
        out.print(
            f"[bold {colour}]{verdict.decision.upper()}[/] {principal.id} {action} {resource}"
            f"  (policies: {', '.join(verdict.policy_ids)}; set {verdict.version})"
        )
        pset = engine.policy_set
        for pid in verdict.policy_ids:
            info = pset.by_id(pid)
            if info is not None:
                out.print(f"  {info.effect} {pid}  ({info.file}:{info.line})")
        if DEFAULT_DENY in verdict.policy_ids:
            out.print("  no policy permits this request (default deny)")
        for line in verdict.advice:
            out.print(f"  to allow it: {line}")
        for err in verdict.errors:
            out.print(f"  policy error: {err}")
    if not verdict.allowed:
        raise typer.Exit(2)


@policy_app.command("test")
def test(
    ctx: typer.Context,
    table: Annotated[Path, typer.Argument(help="YAML decision table.")],
    policies: Annotated[
        Path | None,
        typer.Option(help="Folder of *.cedar files (default: <home>/policies, else shipped)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a table of expected decisions against the policies; exit 1 if any differ."""
    try:
        engine = (
            PolicyEngine.from_folder(policies) if policies is not None else _engine(_config(ctx))
        )
        results = run_table(engine, load_table(table))
    except (PolicyError, TableError) as exc:
        _fail(str(exc))
    failed = [r for r in results if not r.passed]
    if json_out:
        emit_json(
            {
                "policy_version": engine.version,
                "cases": len(results),
                "failed": [
                    {
                        "as": r.case.as_,
                        "action": r.case.action,
                        "resource": r.case.resource,
                        "problem": r.problem,
                        "policy_ids": list(r.verdict.policy_ids),
                    }
                    for r in failed
                ],
            }
        )
    else:
        for r in failed:
            out.print(
                "[red]FAIL[/] "
                + escape(f"{r.case.as_} {r.case.action} {r.case.resource}: {r.problem}"),
                highlight=False,
            )
        colour = "red" if failed else "green"
        out.print(
            f"[{colour}]{len(results) - len(failed)}/{len(results)} decisions as expected[/]"
            f" (policy set {engine.version})"
        )
    if failed:
        raise typer.Exit(1)


def _endpoint_json(ep: EndpointConfig) -> dict[str, object]:
    data = ep.model_dump(mode="json")
    # credentials are referenced, never shown: only whether the reference resolves
    data["credentials"] = _credentials(ep)
    return data


def _credentials(ep: EndpointConfig) -> str | None:
    """'set', 'missing' (with why: the variable or file to fix) or None (no reference)."""
    from sovra.models.generation import GenerationError
    from sovra.models.openai_compat import read_api_key

    if not ep.api_key_env and not ep.api_key_file:
        return None
    try:
        read_api_key(ep.name, ep.api_key_env, ep.api_key_file)
    except GenerationError:
        return "missing"
    return "set"


@endpoint_app.command("list")
def endpoint_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Registered endpoints with their jurisdiction, hosting, ceiling and PII handling."""
    config = _config(ctx)
    if json_out:
        emit_json([_endpoint_json(e) for e in config.endpoints])
        return
    if not config.endpoints:
        out.print("no endpoints registered; add an [[endpoints]] block to sovra.toml")
        return
    for e in config.endpoints:
        out.print(
            f"{e.name:<16} {e.kind:<9} {e.hosting:<15} {e.jurisdiction:<8}"
            f" max={e.max_classification:<13} pii={e.pii:<7} {e.model}",
            highlight=False,
        )


@endpoint_app.command("show")
def endpoint_show(
    ctx: typer.Context, name: Annotated[str, typer.Argument()], json_out: JsonOpt = False
) -> None:
    """One endpoint in full (credentials shown only as set/missing)."""
    config = _config(ctx)
    try:
        data = _endpoint_json(config.endpoint(name))
    except ConfigError as exc:
        _fail(str(exc))
    if json_out:
        emit_json(data)
        return
    for key, value in data.items():
        out.print(f"{key:<20} {value}", highlight=False)


def pii_eval_command(
    per_locale: Annotated[
        int, typer.Option("--per-locale", min=10, help="Texts per locale (7 locales).")
    ] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the generated set.")] = 20261125,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON here.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """PII detection: sovra vs Presidio's default configuration on a generated labelled set."""
    import json

    from sovra.policy.pii_eval import compare

    result = compare(per_locale, seed)
    if output is not None:
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if json_out:
        emit_json(result)
        return
    ours, theirs = result["sovra"], result["presidio_default"]
    assert isinstance(ours, dict) and isinstance(theirs, dict)
    out.print(f"{result['samples']} texts, {result['gold_entities']} labelled identifiers")
    out.print(f"{'entity':<28} {'sovra P/R/F2':>22}   {'presidio default P/R/F2':>24}")
    rows = [("overall", ours["overall"], theirs["overall"])]
    rows.append(
        ("checksum identifiers", ours["checksum_identifiers"], theirs["checksum_identifiers"])
    )
    rows += [(k, v, theirs["by_entity"].get(k, {})) for k, v in ours["by_entity"].items()]
    for name, a, b in rows:
        out.print(
            f"{name:<28} {a['precision']:>6.3f} {a['recall']:>6.3f} {a['f2']:>6.3f}"
            f"   {b.get('precision', 0):>8.3f} {b.get('recall', 0):>6.3f} {b.get('f2', 0):>6.3f}",
            highlight=False,
        )


def doctor_command(
    ctx: typer.Context,
    airgap: Annotated[
        bool, typer.Option("--airgap", help="Prove nothing can leave: stricter checks.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check the install's sovereignty guarantees (policies, PII, endpoints, egress)."""
    from sovra.policy.doctor import run_checks

    config = _config(ctx)
    airgap = airgap or config.egress.airgap  # the configured mode is checked without the flag
    checks = run_checks(config, config.home, airgap=airgap)
    failed = [c for c in checks if c.status == "fail"]
    if json_out:
        emit_json({"airgap": airgap, "ok": not failed, "checks": [c.to_json() for c in checks]})
    else:
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            out.print(
                f"[{colours[c.status]}]{c.status:>4}[/] {c.name:<22} {escape(c.detail)}",
                highlight=False,
            )
    if failed:
        raise typer.Exit(1)


@endpoint_app.command("test")
def endpoint_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    airgap: Annotated[bool, typer.Option("--airgap", help="Apply air-gap egress rules.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Reachability, model availability and latency of one endpoint (through the egress guard)."""
    import time

    from sovra.policy.egress import EgressDenied, EgressGuard, guarded_client

    config = _config(ctx)
    try:
        ep = config.endpoint(name)
    except ConfigError as exc:
        _fail(str(exc))
    result: dict[str, object] = {"endpoint": ep.name, "kind": ep.kind, "model": ep.model}
    if ep.kind == "embedded":
        result.update(ok=True, detail="embedded: runs in-process, no network")
    else:
        from sovra.models.generation import GenerationError
        from sovra.models.openai_compat import read_api_key

        headers = {}
        try:
            key = read_api_key(ep.name, ep.api_key_env, ep.api_key_file)
        except GenerationError as exc:
            _fail(f"credentials missing: {exc}")
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        url = str(ep.base_url).rstrip("/") + "/models"
        guard = EgressGuard(config.endpoints, airgap=airgap or config.egress.airgap)
        start = time.perf_counter()
        try:
            with guarded_client(guard, timeout=min(ep.timeout_s, 15.0)) as client:
                response = client.get(url, headers=headers)
        except EgressDenied as exc:
            _fail(str(exc))
        except Exception as exc:  # network errors of any kind: report, don't trace
            _fail(f"endpoint {ep.name!r} unreachable at {url}: {type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - start) * 1000
        models: list[str] = []
        if response.status_code == 200:
            try:
                models = [str(m.get("id")) for m in response.json().get("data", [])]
            except (ValueError, AttributeError):
                models = []
        ok = response.status_code == 200 and ep.model in models
        detail = (
            f"HTTP {response.status_code}; model {ep.model!r}"
            f" {'listed' if ep.model in models else 'NOT listed'}"
            + (f" (server lists: {', '.join(models[:5])})" if models and not ok else "")
        )
        result.update(
            ok=ok,
            status=response.status_code,
            latency_ms=round(latency, 1),
            models=models,
            detail=detail,
        )
    if json_out:
        emit_json(result)
    else:
        latency_text = f" in {result['latency_ms']} ms" if "latency_ms" in result else ""
        out.print(escape(f"{ep.name}: {result['detail']}{latency_text}"), highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `30m`, or an ISO date/time (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(value) > 1 and value[-1] in units and value[:-1].isdigit():
        return now - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"--since {value!r} is not understood; write 7d, 24h, 30m or 2026-11-01")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def report_usage_command(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option("--by", help="Group rows by user, group or endpoint.")
    ] = "endpoint",
    since: Annotated[
        str | None, typer.Option("--since", help="7d, 24h, 30m or an ISO date.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Model usage: calls, tokens, cost and latency per user, group or endpoint."""
    from sovra.policy.usage import UsageLedger

    if by not in ("user", "group", "endpoint"):
        _fail(f"--by {by!r} is not understood; use user, group or endpoint")
    config = _config(ctx)
    start = parse_since(since) if since else None
    with UsageLedger.in_home(config.home) as ledger:
        rows = ledger.report(by, start)  # type: ignore[arg-type]
    if json_out:
        emit_json({"by": by, "since": start, "rows": [r.to_json() for r in rows]})
        return
    if not rows:
        out.print("no model calls recorded" + (f" since {start:%Y-%m-%d %H:%M}" if start else ""))
        return
    out.print(
        f"{by:<20} {'calls':>7} {'tokens in':>10} {'tokens out':>10} {'cost':>10} {'avg ms':>8}"
    )
    for r in rows:
        out.print(
            f"{r.key:<20} {r.calls:>7} {r.tokens_in:>10} {r.tokens_out:>10}"
            f" {r.cost:>10.4f} {r.latency_ms_avg:>8.1f}",
            highlight=False,
        )


def _config_file(ctx: typer.Context) -> Path:
    from sovra.config import find_config

    path = find_config(state(ctx).config_path)
    if path is None or not path.is_file():
        _fail("no sovra.toml found; create one with `sovra init` or pass --config")
    return path


@endpoint_app.command("add")
def endpoint_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Endpoint name (a-z, 0-9, . _ -).")],
    kind: Annotated[str, typer.Option(help="embedded or openai.")],
    model: Annotated[str, typer.Option(help="Model name (as the server lists it).")],
    base_url: Annotated[str | None, typer.Option(help="For kind openai.")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Name of the environment variable holding the key.")
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option(help="Or: a file (chmod 600) holding the key.")
    ] = None,
    legal_basis: Annotated[str, typer.Option(help="Legal basis or DPA reference.")] = "",
    jurisdiction: Annotated[str, typer.Option(help="Region tag, e.g. eu-de.")] = "local",
    hosting: Annotated[str, typer.Option(help="on_prem, regional_cloud, foreign_cloud.")] = (
        "on_prem"
    ),
    max_classification: Annotated[str, typer.Option(help="Highest label it may see.")] = (
        "internal"
    ),
    pii: Annotated[str, typer.Option(help="allow, redact or deny.")] = "deny",
    cost_per_1k_tokens: Annotated[float, typer.Option(min=0)] = 0.0,
    json_out: JsonOpt = False,
) -> None:
    """Register an endpoint: appends an [[endpoints]] block to sovra.toml, validated first."""
    from pydantic import ValidationError

    from sovra.policy.registry import add_endpoint

    path = _config_file(ctx)
    try:
        ep = EndpointConfig.model_validate(
            {
                "name": name, "kind": kind, "model": model, "base_url": base_url,
                "api_key_env": api_key_env, "jurisdiction": jurisdiction, "hosting": hosting,
                "max_classification": max_classification, "pii": pii,
                "cost_per_1k_tokens": cost_per_1k_tokens, "legal_basis": legal_basis,
                "api_key_file": str(api_key_file.expanduser().resolve()) if api_key_file else None,
            }
        )  # fmt: skip
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "endpoint"
        _fail(f"{field}: {err['msg'].removeprefix('Value error, ')}")
    try:
        add_endpoint(path, ep)
    except ConfigError as exc:
        _fail(f"endpoint {name!r} not added: {exc}")
    if json_out:
        emit_json(_endpoint_json(ep))
    else:
        out.print(f"added endpoint {name} to {path}", highlight=False)


@endpoint_app.command("remove")
def endpoint_remove(
    ctx: typer.Context, name: Annotated[str, typer.Argument()], json_out: JsonOpt = False
) -> None:
    """Remove an endpoint's [[endpoints]] block from sovra.toml (refused if still in use)."""
    from sovra.policy.registry import remove_endpoint

    path = _config_file(ctx)
    try:
        remove_endpoint(path, name)
    except ConfigError as exc:
        _fail(f"endpoint {name!r} not removed: {exc}")
    if json_out:
        emit_json({"removed": name, "config": str(path)})
    else:
        out.print(f"removed endpoint {name} from {path}", highlight=False)
