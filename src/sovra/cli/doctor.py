"""`sovra doctor [--airgap]`: checks that prove the sovereignty guarantees hold on this machine.

Each check is a (name, status, detail) row: `ok`, `warn` or `fail`. With `--airgap` the bar is
higher: offline switches must be set, every endpoint must be on-prem and resolve to a local
address, and a direct outbound connection must fail. Components are started while every
socket connect is intercepted, so a library that tries to reach the network is named.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sovra.cli.kit import JsonOpt, emit_json, out
from sovra.cli.policy import _config
from sovra.config import Config
from sovra.egress import EgressDenied, EgressGuard, guarded_client

OFFLINE_ENV: tuple[str, ...] = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
)
PROBE = ("1.1.1.1", 443)
"""A public address an outbound probe tries; in air-gap mode reaching it is a failure."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@contextmanager
def no_network() -> Iterator[list[str]]:
    """Refuse every outbound socket connect (loopback too) and record who tried."""
    attempts: list[str] = []
    real = socket.socket.connect

    def refuse(sock: socket.socket, address: object) -> None:
        attempts.append(str(address))
        raise OSError("network disabled by sovra doctor")

    socket.socket.connect = refuse  # type: ignore[method-assign,assignment]
    try:
        yield attempts
    finally:
        socket.socket.connect = real  # type: ignore[method-assign]


def _component(name: str, start: Callable[[], str]) -> Check:
    with no_network() as attempts:
        try:
            detail = start()
        except Exception as exc:  # a component that cannot start is a failed check
            if attempts:
                return Check(name, "fail", f"tried to connect to {', '.join(attempts)}")
            return Check(name, "fail", f"{type(exc).__name__}: {exc}")
    if attempts:
        return Check(name, "fail", f"tried to connect to {', '.join(attempts)}")
    return Check(name, "ok", detail + "; no network access on start")


def _probe(address: tuple[str, int], timeout: float) -> str | None:
    """None when the connection failed (good in air-gap mode); else a description."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return f"connected to {address[0]}:{address[1]}"
    except OSError:
        return None


MODE_LIST_LIMIT = 20
"""At most this many too-open paths are named; the count is always exact."""


def file_mode_checks(home: Path) -> list[Check]:
    """The data directory and everything in it must be owner-only (dirs 0700, files 0600).

    Symbolic links are not followed (their own mode means nothing); a file others can read
    is reported with the exact `chmod` that fixes it.
    """
    if not home.exists():
        return [Check("data file modes", "ok", f"{home} does not exist yet")]
    bad: list[str] = []
    count = 0
    for dirpath, dirnames, filenames, dirfd in os.fwalk(home, follow_symlinks=False):
        entries = [(Path(dirpath), os.fstat(dirfd))] if dirpath == str(home) else []
        for name in [*dirnames, *filenames]:
            try:
                entries.append(
                    (Path(dirpath) / name, os.stat(name, dir_fd=dirfd, follow_symlinks=False))
                )
            except OSError:
                continue  # vanished while walking
        for path, st in entries:
            if stat.S_ISLNK(st.st_mode):
                continue
            mode = stat.S_IMODE(st.st_mode)
            if not mode & 0o077:
                continue
            count += 1
            if len(bad) < MODE_LIST_LIMIT:
                want = "700" if stat.S_ISDIR(st.st_mode) else "600"
                bad.append(f"{path} is {mode:o}: chmod {want} {path}")
    if not bad:
        return [Check("data file modes", "ok", f"{home} and everything in it are owner-only")]
    more = f" (and {count - len(bad)} more)" if count > len(bad) else ""
    detail = "; ".join(bad) + more + f"; or all at once: chmod -R go-rwx {home}"
    return [Check("data file modes", "fail", f"{count} readable by other users: {detail}")]


def run_checks(
    config: Config,
    home: Path,
    *,
    airgap: bool,
    probe: tuple[str, int] = PROBE,
    probe_timeout: float = 3.0,
) -> list[Check]:
    checks: list[Check] = []

    missing = [v for v in OFFLINE_ENV if not os.environ.get(v)]
    if missing:
        fix = "export " + " ".join(f"{v}=1" for v in missing)
        checks.append(Check("offline switches", "fail" if airgap else "warn", f"not set: {fix}"))
    else:
        checks.append(Check("offline switches", "ok", ", ".join(OFFLINE_ENV) + " set"))
    checks.extend(file_mode_checks(home))
    for var in OFFLINE_ENV:  # the components below start offline whatever the shell says
        os.environ.setdefault(var, "1")

    def policies() -> str:
        from sovra.policy.engine import PolicyEngine

        engine = PolicyEngine.for_home(home)
        pset = engine.policy_set
        return f"{len(pset.policies)} policies from {', '.join(pset.files)} ({engine.version})"

    def pii() -> str:
        from sovra.policy.pii import PiiDetector

        PiiDetector().find("IBAN DE89 3704 0044 0532 0130 00")
        return "Presidio with sovra's pattern + checksum recognizers (no NER model)"

    def embedding() -> str:
        from sovra.workspace import embedder_for

        embedder = embedder_for(config)
        vectors = embedder.embed(["offline check"])
        where = getattr(embedder, "path", "its package")
        return f"{embedder.name} from {where} ({vectors.shape[1]} dimensions)"

    checks.append(_component("policy engine", policies))
    checks.append(_component("PII detector", pii))
    # sentence-transformers and the Hugging Face hub are the libraries most likely to phone home
    checks.append(_component("embedding model", embedding))

    guard = EgressGuard(config.endpoints, airgap=airgap)
    if not config.endpoints:
        checks.append(Check("endpoints", "warn", "none registered: answers are extractive"))
    for ep in config.endpoints:
        if ep.kind == "embedded":
            checks.append(Check(f"endpoint {ep.name}", "ok", "embedded, runs in-process"))
            continue
        try:
            guard.check(str(ep.base_url))
            checks.append(
                Check(f"endpoint {ep.name}", "ok", f"{ep.hosting} {ep.jurisdiction} {ep.base_url}")
            )
        except EgressDenied as exc:
            checks.append(Check(f"endpoint {ep.name}", "fail", str(exc)))

    try:
        with guarded_client(guard, timeout=probe_timeout) as client:
            client.get(f"https://{probe[0]}:{probe[1]}/")
        checks.append(Check("egress guard", "fail", f"a request to {probe[0]} was not refused"))
    except EgressDenied as exc:
        checks.append(Check("egress guard", "ok", f"unregistered host refused: {exc}"))
    except Exception as exc:  # the guard let it through and the network failed instead
        checks.append(Check("egress guard", "fail", f"request not refused by the guard: {exc}"))

    reached = _probe(probe, probe_timeout)
    if reached is None:
        checks.append(Check("outbound network", "ok", f"{probe[0]}:{probe[1]} unreachable"))
    elif airgap:
        checks.append(
            Check(
                "outbound network",
                "fail",
                f"{reached}: this machine has a route out; the egress guard is the only"
                " barrier (run in a network without a default route)",
            )
        )
    else:
        checks.append(Check("outbound network", "warn", f"{reached} (not in air-gap mode)"))
    return checks


def doctor_command(
    ctx: typer.Context,
    airgap: Annotated[
        bool, typer.Option("--airgap", help="Prove nothing can leave: stricter checks.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check the install's sovereignty guarantees (policies, PII, endpoints, egress)."""
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
