"""The egress guard: the one way a request leaves the process (docs/architecture.md).

`EgressGuard.check(url)` allows a URL only when its scheme, host and port are those of a
registered endpoint's `base_url`; in air-gap mode the endpoint must also be `on_prem` and its
host must resolve only to loopback or private addresses. The check runs in the *transport*
(`GuardedTransport`), below redirects and retries, so every request the client sends is
checked, including a redirect's target. Proxies from the environment are ignored (a proxy
would carry the request somewhere the guard never saw).

`guarded_client()` gives an `httpx.Client`; `openai_http_client()` the same for the OpenAI SDK,
which is built on `httpx2` (the same API) in this environment.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from sovra.config import EndpointConfig
from sovra.errors import Unavailable

Resolver = Callable[[str, int], list[str]]


class EgressDenied(Unavailable):
    """A request to a destination the registry or air-gap mode does not allow."""


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise EgressDenied(f"cannot resolve {host}: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


def is_local_address(address: str) -> bool:
    """Loopback, private (RFC 1918 / ULA) or link-local: addresses that stay on site."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or ip.is_private or ip.is_link_local


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Destination:
        parts = urlsplit(url)
        scheme = (parts.scheme or "").lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise EgressDenied(f"{url!r} is not an http(s) URL")
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(scheme, parts.hostname.lower(), port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


class EgressGuard:
    """Allow-list of destinations built from the endpoint registry."""

    def __init__(
        self,
        endpoints: Sequence[EndpointConfig],
        *,
        airgap: bool = False,
        resolver: Resolver = resolve,
        extra_hosts: Sequence[str] = (),
    ) -> None:
        self.airgap = airgap
        self.resolver = resolver
        self.destinations: dict[Destination, EndpointConfig] = {}
        for ep in endpoints:
            if ep.kind == "openai" and ep.base_url:
                self.destinations[Destination.of(ep.base_url)] = ep
        # Non-model destinations (e.g. `[flows] webhook_hosts`): "host" (any port) or "host:port".
        self.extra_hosts: frozenset[tuple[str, int | None]] = frozenset(
            _host_entry(h) for h in extra_hosts
        )

    def _extra_allowed(self, dest: Destination) -> bool:
        return (dest.host, None) in self.extra_hosts or (dest.host, dest.port) in self.extra_hosts

    def check(self, url: str) -> EndpointConfig | None:
        """The endpoint this URL belongs to (None: an allowed extra host), or EgressDenied."""
        dest = Destination.of(url)
        endpoint = self.destinations.get(dest)
        if endpoint is None and self._extra_allowed(dest):
            if self.airgap:
                self._require_local(dest)
            return None
        if endpoint is None:
            known = ", ".join(
                sorted(
                    [str(d) for d in self.destinations] + [_host_str(h) for h in self.extra_hosts]
                )
            )
            raise EgressDenied(
                f"egress to {dest} refused: not a registered endpoint or allowed host"
                f" (allowed: {known or 'none'})"
            )
        if self.airgap:
            if endpoint.hosting != "on_prem":
                raise EgressDenied(
                    f"egress to {dest} refused: air-gap mode allows only on_prem endpoints,"
                    f" {endpoint.name!r} is {endpoint.hosting}"
                )
            self._require_local(dest)
        return endpoint

    def _require_local(self, dest: Destination) -> None:
        outside = [a for a in self.resolver(dest.host, dest.port) if not is_local_address(a)]
        if outside:
            raise EgressDenied(
                f"egress to {dest} refused: air-gap mode, {dest.host} resolves to"
                f" non-local address {', '.join(outside)}"
            )


def _host_entry(entry: str) -> tuple[str, int | None]:
    """ "host", "host:port", "[v6]:port" or a URL → (lower-case host, port or None for any)."""
    text = entry.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if not parts.hostname:
        raise EgressDenied(
            f"allowed host {entry!r} is not a host name; write e.g. hooks.example.eu"
        )
    try:
        port = parts.port
    except ValueError:
        raise EgressDenied(f"allowed host {entry!r} has an invalid port") from None
    return parts.hostname.lower(), port


def _host_str(entry: tuple[str, int | None]) -> str:
    return entry[0] if entry[1] is None else f"{entry[0]}:{entry[1]}"


class GuardedTransport:
    """An httpx/httpx2 transport that checks every request before the inner one sends it."""

    def __init__(self, guard: EgressGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner

    def handle_request(self, request: Any) -> Any:
        self.guard.check(str(request.url))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> GuardedTransport:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


def _client(module: Any, guard: EgressGuard, kwargs: dict[str, Any]) -> Any:
    bypass = {"transport", "mounts", "proxy", "proxies", "trust_env"} & kwargs.keys()
    if bypass:  # each of these would route requests around the guarded transport
        raise ValueError(f"egress client: {', '.join(sorted(bypass))} cannot be overridden")
    inner = module.HTTPTransport(retries=0)
    transport_type = type("GuardedTransport", (GuardedTransport, module.BaseTransport), {})
    kwargs.setdefault("follow_redirects", False)
    return module.Client(transport=transport_type(guard, inner), trust_env=False, **kwargs)


def guarded_client(guard: EgressGuard, **kwargs: Any) -> httpx.Client:
    """An httpx.Client whose every request passes `guard` first."""
    client: httpx.Client = _client(httpx, guard, kwargs)
    return client


def openai_http_client(guard: EgressGuard, **kwargs: Any) -> Any:
    """The same for the OpenAI SDK (`openai.OpenAI(http_client=...)`), which uses httpx2."""
    module = importlib.import_module("httpx2")
    return _client(module, guard, kwargs)
