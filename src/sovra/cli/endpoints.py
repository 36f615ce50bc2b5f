"""`sovra endpoint list|show|test|add|remove`: model endpoints, where data may be sent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sovra.cli.kit import JsonOpt, emit_json, out, state
from sovra.cli.policy import _config, _fail
from sovra.config import ConfigError, EndpointConfig

endpoint_app = typer.Typer(help="Model endpoints: where data may be sent.", no_args_is_help=True)


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


@endpoint_app.command("test")
def endpoint_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    airgap: Annotated[bool, typer.Option("--airgap", help="Apply air-gap egress rules.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Reachability, model availability and latency of one endpoint (through the egress guard)."""
    import time

    from sovra.egress import EgressDenied, EgressGuard, guarded_client

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
