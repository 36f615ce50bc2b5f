"""Egress guard, `sovra endpoint test`, `sovra doctor --airgap`, and a run with no route out."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated

import httpx
import pytest
import typer
from typer.testing import CliRunner

from sovra.cli.doctor import OFFLINE_ENV, _component, doctor_command, run_checks
from sovra.cli.endpoints import endpoint_app
from sovra.cli.kit import CliState
from sovra.config import load_config
from sovra.domain import ClassificationScale
from sovra.egress import EgressDenied, EgressGuard, guarded_client, openai_http_client
from sovra.policy import PolicyEngine, Router
from tests.support.policy import chunk, endpoint, user


class RecordingServer(ThreadingHTTPServer):
    """A fake OpenAI-compatible server that remembers every request it received."""

    seen: list[str]
    redirect_to: str | None = None


class Recorder(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        redirect = self.server.redirect_to
        if redirect:
            self.send_response(302)
            self.send_header("Location", redirect)
            self.end_headers()
            return
        body = json.dumps({"data": [{"id": "qwen"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[list[RecordingServer]]:
    started = []
    for _ in range(2):
        srv = RecordingServer(("127.0.0.1", 0), Recorder)
        srv.seen = []
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
    yield started
    for srv in started:
        srv.shutdown()
        srv.server_close()


def url(srv: RecordingServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def test_guard_allows_only_registered_destinations() -> None:
    eu = endpoint(
        "eu", hosting="regional_cloud", jurisdiction="eu", base_url="https://llm.example.eu/v1"
    )
    guard = EgressGuard([eu, endpoint("local")])
    assert guard.check("https://llm.example.eu/v1/chat/completions") is eu
    assert guard.check("https://LLM.example.eu:443/other") is eu
    for bad in (
        "https://evil.example/v1",
        "http://llm.example.eu/v1",
        "https://llm.example.eu:8443/",
        "file:///etc/passwd",
        "ftp://llm.example.eu/",
    ):
        with pytest.raises(EgressDenied):
            guard.check(bad)


def test_airgap_allows_only_on_prem_local_addresses() -> None:
    onprem = endpoint("vllm", kind="openai", base_url="http://vllm.internal:8000/v1")
    cloud = endpoint(
        "eu", hosting="regional_cloud", jurisdiction="eu", base_url="http://127.0.0.1:9/v1"
    )
    guard = EgressGuard([onprem, cloud], airgap=True, resolver=lambda h, p: ["10.1.2.3"])
    assert guard.check("http://vllm.internal:8000/v1/models") is onprem
    with pytest.raises(EgressDenied, match="only on_prem endpoints, 'eu' is regional_cloud"):
        guard.check("http://127.0.0.1:9/v1/models")
    public = EgressGuard([onprem], airgap=True, resolver=lambda h, p: ["10.1.2.3", "93.184.216.34"])
    with pytest.raises(EgressDenied, match=r"non-local address 93\.184\.216\.34"):
        public.check("http://vllm.internal:8000/v1/models")


def test_foreign_endpoint_never_receives_confidential_data(
    servers: list[RecordingServer],
) -> None:
    """A fake foreign endpoint on loopback; every call goes router → egress."""
    local_srv, foreign_srv = servers
    local = endpoint(
        "local",
        kind="openai",
        base_url=url(local_srv),
        pii="allow",
        max_classification="confidential",
    )
    foreign = endpoint(
        "us",
        hosting="foreign_cloud",
        jurisdiction="us",
        base_url=url(foreign_srv),
        pii="allow",
        max_classification="restricted",
        cost_per_1k_tokens=0.0,
    )
    router = Router(
        PolicyEngine.default(),
        [foreign, local],
        ClassificationScale(),
        home_region="eu-de",
        preference="configured",
    )
    guard = EgressGuard([local, foreign])
    for label, requested in (("confidential", None), ("confidential", "us"), ("public", None)):
        decision = router.decide(user("bob"), [chunk(label, "*")], requested=requested)
        if decision.chosen is not None:
            with guarded_client(guard) as client:
                client.post(f"{decision.chosen.base_url}/chat/completions", json={"label": label})
    assert foreign_srv.seen == ["/v1/chat/completions"]  # only the public request
    assert local_srv.seen == ["/v1/chat/completions"]


def test_redirect_to_an_unregistered_host_is_refused(servers: list[RecordingServer]) -> None:
    registered, other = servers
    registered.redirect_to = url(other) + "/models"
    guard = EgressGuard([endpoint("local", kind="openai", base_url=url(registered))])
    for client in (
        guarded_client(guard, follow_redirects=True),
        openai_http_client(guard, follow_redirects=True),
    ):
        with client, pytest.raises(EgressDenied, match="not a registered endpoint"):
            client.get(url(registered) + "/models")
    assert other.seen == []


def test_proxy_settings_are_ignored(
    servers: list[RecordingServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the guarded transport sends: no proxy from the environment or the caller."""
    target, proxy = servers
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    guard = EgressGuard([endpoint("local", kind="openai", base_url=url(target))])
    with guarded_client(guard) as client:
        assert client.get(url(target) + "/models").status_code == 200
    with openai_http_client(guard) as client:
        assert client.get(url(target) + "/models").status_code == 200
    assert target.seen == ["/v1/models", "/v1/models"] and proxy.seen == []
    bypasses: list[dict[str, object]] = [
        {"proxy": "http://127.0.0.1:9"},
        {"mounts": {}},
        {"transport": None},
    ]
    for bypass in bypasses:
        with pytest.raises(ValueError, match="cannot be overridden"):
            guarded_client(guard, **bypass)


# ---- CLI -----------------------------------------------------------------------------------

root = typer.Typer()


@root.callback()
def _root(
    ctx: typer.Context, config: Annotated[Path | None, typer.Option("--config")] = None
) -> None:
    ctx.obj = CliState(config_path=config)


root.add_typer(endpoint_app, name="endpoint")
root.command("doctor")(doctor_command)


def write_config(tmp_path: Path, base_url: str, hosting: str = "on_prem") -> Path:
    path = tmp_path / "sovra.toml"
    path.write_text(
        f'[workspace]\nhome = "home"\n\n[[endpoints]]\nname = "vllm"\nkind = "openai"\n'
        f'model = "qwen"\nbase_url = "{base_url}"\napi_key_env = "SOVRA_TEST_VLLM_KEY"\n'
        f'hosting = "{hosting}"\n'
    )
    return path


def test_endpoint_test_reports_model_and_latency(
    servers: list[RecordingServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    config = write_config(tmp_path, url(servers[0]))
    monkeypatch.delenv("SOVRA_TEST_VLLM_KEY", raising=False)
    result = CliRunner().invoke(root, ["--config", str(config), "endpoint", "test", "vllm"])
    assert result.exit_code == 1 and "SOVRA_TEST_VLLM_KEY" in result.output
    assert servers[0].seen == []
    monkeypatch.setenv("SOVRA_TEST_VLLM_KEY", "k")
    result = CliRunner().invoke(
        root, ["--config", str(config), "endpoint", "test", "vllm", "--airgap", "--json"]
    )
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["ok"] and data["models"] == ["qwen"]
    assert data["latency_ms"] >= 0 and servers[0].seen == ["/v1/models"]


def test_doctor_airgap(
    servers: list[RecordingServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    for var in OFFLINE_ENV:
        monkeypatch.setenv(var, "1")
    config = load_config(write_config(tmp_path, url(servers[0])))
    closed = ("127.0.0.1", 9)  # nothing listens on the discard port: "no route out"
    checks = run_checks(config, tmp_path / "home", airgap=True, probe=closed, probe_timeout=1)
    assert {c.name: c.status for c in checks} == {
        "offline switches": "ok",
        "data file modes": "ok",
        "policy engine": "ok",
        "PII detector": "ok",
        "embedding model": "ok",
        "endpoint vllm": "ok",
        "egress guard": "ok",
        "outbound network": "ok",
    }
    # a reachable address in air-gap mode fails, and so does a cloud endpoint
    open_port = ("127.0.0.1", servers[1].server_address[1])
    cloud = load_config(write_config(tmp_path, url(servers[0]), hosting="regional_cloud"))
    checks = run_checks(cloud, tmp_path / "home", airgap=True, probe=open_port, probe_timeout=1)
    status = {c.name: c.status for c in checks}
    assert status["outbound network"] == "fail" and status["endpoint vllm"] == "fail"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    checks = run_checks(config, tmp_path / "home", airgap=True, probe=closed, probe_timeout=1)
    assert [c.detail for c in checks if c.name == "offline switches"] == [
        "not set: export HF_HUB_OFFLINE=1"
    ]


def test_doctor_names_a_component_that_reaches_for_the_network() -> None:
    def phones_home() -> str:
        import socket

        with socket.socket() as s:
            s.connect(("203.0.113.7", 443))
        return "never"

    check = _component("telemetry lib", phones_home)
    assert check.status == "fail" and "203.0.113.7" in check.detail


def test_doctor_cli_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    for var in OFFLINE_ENV:
        monkeypatch.delenv(var, raising=False)
    config = write_config(tmp_path, "https://llm.example.eu/v1", hosting="regional_cloud")
    result = CliRunner().invoke(root, ["--config", str(config), "doctor", "--airgap", "--json"])
    data = json.loads(result.output)
    assert result.exit_code == 1 and not data["ok"]
    assert {c["name"] for c in data["checks"] if c["status"] == "fail"} >= {
        "offline switches",
        "endpoint vllm",
    }


NAMESPACE_SCRIPT = """
import json, os, sys
from pathlib import Path
from sovra.config import load_config
from sovra.cli.doctor import OFFLINE_ENV, run_checks
for v in OFFLINE_ENV:
    os.environ[v] = "1"
config = load_config(Path(sys.argv[1]))
checks = run_checks(config, Path(sys.argv[2]), airgap=True, probe_timeout=2)
print(json.dumps({c.name: c.status for c in checks}))
"""


def test_airgap_in_a_network_namespace_without_a_route_out(tmp_path: Path) -> None:
    """`unshare -rn`: a fresh user + network namespace; the public probe must not connect."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"kernel forbids unprivileged network namespaces: {probe.stderr.strip()}")
    config = write_config(tmp_path, "http://127.0.0.1:8000/v1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVRA_")}
    done = subprocess.run(
        [
            "unshare",
            "-rn",
            sys.executable,
            "-c",
            NAMESPACE_SCRIPT,
            str(config),
            str(tmp_path / "home"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(status.values()) == {"ok"}, status
    assert status["outbound network"] == "ok"


def test_httpx_is_the_real_library() -> None:
    assert httpx.__name__ == "httpx" and hasattr(httpx, "HTTPTransport")


# ---- credentials by reference --------------------------------------------------------------


class KeyRecorder(Recorder):
    def do_GET(self) -> None:
        self.server.seen.append(self.headers.get("Authorization", ""))
        super().do_GET()


def test_endpoint_credentials_from_a_file_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    srv = RecordingServer(("127.0.0.1", 0), KeyRecorder)
    srv.seen = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    key = tmp_path / "vllm.key"
    config = tmp_path / "sovra.toml"
    config.write_text(
        f'[workspace]\nhome = "home"\n\n[[endpoints]]\nname = "vllm"\nkind = "openai"\n'
        f'model = "qwen"\nbase_url = "{url(srv)}"\napi_key_file = "{key}"\n'
    )

    def cli(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(root, ["--config", str(config), *args])
        return result.exit_code, " ".join(result.output.split())

    try:
        code, text = cli("endpoint", "test", "vllm")
        assert code == 1 and f"cannot read its api_key_file {key}" in text
        assert "chmod 600" in text
        key.write_text("sk-file-secret\n")
        key.chmod(0o644)
        code, text = cli("endpoint", "test", "vllm")
        assert code == 1 and "is readable by other users" in text and "sk-file-secret" not in text
        assert srv.seen == []  # nothing was sent while the credentials were unusable
        code, text = cli("endpoint", "list", "--json")
        assert json.loads(text)[0]["credentials"] == "missing"
        key.chmod(0o600)
        for args in (("endpoint", "test", "vllm", "--json"), ("endpoint", "show", "vllm")):
            code, text = cli(*args)
            assert code == 0 and "sk-file-secret" not in text
        assert srv.seen == ["Bearer sk-file-secret", "/v1/models"]  # the key went there only
        code, text = cli("endpoint", "list", "--json")
        assert json.loads(text)[0]["credentials"] == "set"
    finally:
        srv.shutdown()
        srv.server_close()


def test_generator_reads_the_key_file_and_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sovra.models.generation import GenerationError
    from sovra.models.openai_compat import OpenAICompatibleGenerator, read_api_key

    monkeypatch.delenv("SOVRA_TEST_KEY", raising=False)
    with pytest.raises(GenerationError, match="environment variable SOVRA_TEST_KEY"):
        read_api_key("ep", "SOVRA_TEST_KEY")
    with pytest.raises(GenerationError, match="cannot read its api_key_file"):
        OpenAICompatibleGenerator(
            "http://127.0.0.1:9/v1", "m", name="ep", api_key_file=tmp_path / "absent"
        )
    key = tmp_path / "k"
    key.write_text("")
    key.chmod(0o600)
    with pytest.raises(GenerationError, match="is empty"):
        read_api_key("ep", None, key)
    key.write_text(" sk-x \n")
    assert read_api_key("ep", None, key) == "sk-x"
    monkeypatch.setenv("SOVRA_TEST_KEY", "sk-env")
    assert read_api_key("ep", "SOVRA_TEST_KEY", key) == "sk-env"  # the variable wins
    assert read_api_key("ep") is None


def test_endpoint_test_unreachable_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    monkeypatch.setenv("SOVRA_TEST_VLLM_KEY", "sk-never-shown")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path, f"http://127.0.0.1:{port}/v1")
    result = CliRunner().invoke(root, ["--config", str(config), "endpoint", "test", "vllm"])
    text = " ".join(result.output.split())
    assert (
        result.exit_code == 1 and f"endpoint 'vllm' unreachable at http://127.0.0.1:{port}" in text
    )
    assert "Traceback" not in text and "sk-never-shown" not in text


def test_endpoint_test_model_not_listed_and_unregistered_in_airgap(
    servers: list[RecordingServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOVRA_HOME", raising=False)
    monkeypatch.setenv("SOVRA_TEST_VLLM_KEY", "k")
    config = write_config(tmp_path, url(servers[0]))
    config.write_text(config.read_text().replace('model = "qwen"', 'model = "llama"'))
    result = CliRunner().invoke(root, ["--config", str(config), "endpoint", "test", "vllm"])
    text = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "HTTP 200; model 'llama' NOT listed (server lists: qwen) in" in text
    # [egress] airgap = true in the config applies without --airgap: a cloud endpoint is refused
    cloud = write_config(tmp_path, url(servers[1]), hosting="regional_cloud")
    cloud.write_text("[egress]\nairgap = true\n\n" + cloud.read_text())
    result = CliRunner().invoke(root, ["--config", str(cloud), "endpoint", "test", "vllm"])
    assert result.exit_code == 1 and "air-gap mode allows only on_prem" in result.output
    assert servers[1].seen == []
