"""Air-gap integration: full `sovra ask` runs in a network namespace with no route out.

The demo site of `test_cli_e2e` (real embedding model, real index, demo users) gets one extra
ticket holding personal data. A driver script runs under `unshare -rn` (a fresh user + network
namespace: loopback only): it starts a fake OpenAI-compatible server on the namespace's
loopback that records every request, then runs each step through the `sovra` CLI (the
offline ask as its own process, the others in the driver's process to save model loads). The
fake server stands for three endpoints, told apart by path: `hyperscaler` (`foreign_cloud`),
`vllm` (`on_prem`) and `eu-cloud` (`regional_cloud`, PII `redact`). The tests then read the
server's request log: the foreign endpoint must never receive a request whose sources include
confidential chunks, whatever the router chose, and the regional one receives pseudonyms,
never the originals, while the answer shown carries the originals.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.demo_site import demo_config
from tests.test_cli_e2e import app, runner, sovra
from tests.test_cli_e2e import site as e2e_site  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

PORT = 18080  # free by construction: the namespace is new and empty
FAKE = f"http://127.0.0.1:{PORT}"
PII_EMAIL = "jan.kowalski@example.pl"
PII_IBAN = "DE89 3704 0044 0532 0130 00"
PII_TICKET = (
    "vpn token reset for contractor,please reset the vpn token for the contractor "
    f"{PII_EMAIL} and refund to iban {PII_IBAN} thanks,1,4,2,21,71,3,4\n"
)
RUNBOOK_Q = "what should I do when etcd database quota is low?"
TICKET_Q = "vpn token reset for the contractor"

GEMMA = """
[[endpoints]]
name = "local-gemma"
kind = "embedded"
model = "gemma3-270m-base"
jurisdiction = "eu-de"
hosting = "on_prem"
max_classification = "confidential"
pii = "redact"
# A small window keeps the prompt, and so the base model's time on a loaded 2-core box, short.
context_length = 768
"""


def fake_endpoint(name: str, hosting: str, max_classification: str, pii: str, cost: float) -> str:
    """The fake server under its own path: the request log tells the endpoints apart."""
    return f"""
[[endpoints]]
name = "{name}"
kind = "openai"
base_url = "{FAKE}/{name}/v1"
model = "fake"
jurisdiction = "eu"
hosting = "{hosting}"
max_classification = "{max_classification}"
pii = "{pii}"
cost_per_1k_tokens = {cost}
max_retries = 0
"""


# A foreign-owned cloud processing in an EU region: residency is satisfied, so only the
# `confidential-not-foreign` rule stands between it and confidential data.
FOREIGN = fake_endpoint("hyperscaler", "foreign_cloud", "restricted", "allow", 0.0)
ON_PREM = fake_endpoint("vllm", "on_prem", "confidential", "allow", 0.5)
REGIONAL = fake_endpoint("eu-cloud", "regional_cloud", "confidential", "redact", 0.1)
# Short answers keep the base model's generation time bounded on a 2-core machine.
ANSWER = "[answer]\nmax_answer_tokens = 48\n"
CONFIG = demo_config(tickets=True)  # the e2e site's own sovra.toml
CONFIGS = {
    # air-gap on: the in-process model answers; the foreign endpoint is refused before sending
    "airgap": CONFIG + ANSWER + "[egress]\nairgap = true\n" + GEMMA + FOREIGN,
    # the foreign endpoint alone: confidential questions are refused, naming the rule
    "foreign": CONFIG + ANSWER + FOREIGN,
    # on-prem and foreign, foreign cheapest: confidential data must still stay on-prem
    "mixed": CONFIG + ANSWER + '[routing]\npreference = "cheapest"\n' + ON_PREM + FOREIGN,
    # the Done: only a regional cloud with PII `redact`
    "regional": CONFIG + ANSWER + REGIONAL,
}
AUTO = ["--endpoint", "auto"]  # the router picks among all registered endpoints
STEPS: list[tuple[str, str, list[str]]] = [
    ("offline-gguf", "airgap", ["ask", RUNBOOK_Q, "--as", "alice", "--endpoint", "local-gemma"]),
    ("airgap-foreign", "airgap", ["ask", RUNBOOK_Q, "--as", "alice", "--endpoint", "hyperscaler"]),
    ("foreign-ticket", "foreign", ["ask", TICKET_Q, "--as", "bob", *AUTO]),
    ("mixed-ticket", "mixed", ["ask", TICKET_Q, "--as", "bob", *AUTO]),
    ("mixed-runbook", "mixed", ["ask", RUNBOOK_Q, "--as", "alice", *AUTO]),
    ("regional-ticket", "regional", ["ask", TICKET_Q, "--as", "bob", *AUTO]),
]
# Each `sovra` process loads torch, the embedding model and Presidio (~10 s of CPU): the
# offline GGUF ask and `audit show` run as real CLI processes, the other asks through the same
# CLI app inside the driver process, which is in the namespace too.
SUBPROCESS_STEPS = {"offline-gguf"}
AUDIT_ARGS = ["--action", "send_to_endpoint", "--json"]

DRIVER = r'''
"""Runs inside the namespace: a recording fake endpoint on loopback, then each CLI step."""
import json, re, socket, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

plan = json.load(open(sys.argv[1]))
log, current = [], {"step": None}
TOKEN = re.compile(r"<[A-Z][A-Z_]*_\d+>")
SOURCE = re.compile(r'<source id="(\d+)"[^>]*>(.*?)</source>', re.S)


def reply_for(body):
    prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
    for number, text in SOURCE.findall(prompt):
        token = TOKEN.search(text)
        if token:  # echo a pseudonym back: the answer shown must carry the original
            return f"Contact {token.group(0)} [{number}]."
    return "See the source [1]."


class Fake(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, ctype, payload):
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        log.append({"step": current["step"], "method": "GET", "path": self.path, "json": None})
        self._send("application/json", json.dumps({"data": [{"id": "fake"}]}).encode())

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.loads(raw or b"{}")
        log.append({"step": current["step"], "method": "POST", "path": self.path, "json": body})
        chunk = lambda delta, finish=None: json.dumps({
            "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        events = [chunk({"content": reply_for(body)}), chunk({}, "stop"), "[DONE]"]
        self._send("text/event-stream", "".join(f"data: {e}\n\n" for e in events).encode())


server = ThreadingHTTPServer(("127.0.0.1", plan["port"]), Fake)
threading.Thread(target=server.serve_forever, daemon=True).start()
try:
    socket.create_connection(("1.1.1.1", 443), timeout=3).close()
    outbound = "connected"
except OSError as exc:
    outbound = f"{type(exc).__name__}: {exc}"
results = []
for name, config, args, subprocess_step in plan["steps"]:
    current["step"] = name
    started = time.monotonic()
    if subprocess_step:
        proc = subprocess.run([plan["sovra"], "--config", config, *args], cwd=plan["cwd"],
                              capture_output=True, text=True, timeout=240)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        from typer.testing import CliRunner
        from sovra.cli import app
        result = CliRunner().invoke(app, ["--config", config, *args])
        rc, stdout, stderr = result.exit_code, result.stdout, result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += f"\nTraceback: {result.exception!r}"
    results.append({"step": name, "rc": rc, "stdout": stdout, "stderr": stderr[-3000:],
                    "wall_s": time.monotonic() - started})
current["step"] = None
server.shutdown()
json.dump({"outbound": outbound, "results": results, "requests": log}, open(plan["out"], "w"))
'''


def namespace_available() -> str | None:
    """None when `unshare -rn` works here, else why not (printed as the skip reason)."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (util-linux / iproute2)"
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"the kernel forbids unprivileged network namespaces: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def run(e2e_site: Path) -> dict[str, Any]:  # noqa: F811
    """Every step, run once inside one namespace; the outcome and the server's request log."""
    site = e2e_site
    reason = namespace_available()
    if reason is not None:
        print(f"air-gap test skipped: {reason}")
        pytest.skip(reason)
    with (site / "company/tickets.csv").open("a", encoding="utf-8") as fh:
        fh.write(PII_TICKET)
    assert sovra("source", "sync", "tickets").exit_code == 0
    # The packaged GGUF is registered in the workspace once (checksummed, offline).
    for name, text in CONFIGS.items():
        (site / f"sovra-{name}.toml").write_text(text, encoding="utf-8")
    added = runner.invoke(app, ["--config", "sovra-airgap.toml", "model", "add-default", "--json"])
    assert added.exit_code == 0, added.output
    plan = {
        "port": PORT,
        "cwd": str(site),
        "out": str(site / "airgap-run.json"),
        "sovra": str(Path(sys.executable).parent / "sovra"),
        "steps": [
            (n, f"sovra-{c}.toml", [*a, "--json"], n in SUBPROCESS_STEPS) for n, c, a in STEPS
        ]
        + [("audit", "sovra-regional.toml", ["audit", "show", *AUDIT_ARGS], True)],
    }
    (site / "airgap-plan.json").write_text(json.dumps(plan), encoding="utf-8")
    (site / "airgap-driver.py").write_text(DRIVER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVRA_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    script = 'ip link set lo up && exec "$0" airgap-driver.py airgap-plan.json'
    done = subprocess.run(
        ["unshare", "-rn", "sh", "-c", script, sys.executable],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads((site / "airgap-run.json").read_text(encoding="utf-8"))
    print("step times:", {r["step"]: round(r["wall_s"], 1) for r in data["results"]})
    return data


def answer(run: dict[str, Any], step: str) -> dict[str, Any]:
    result = next(r for r in run["results"] if r["step"] == step)
    assert result["rc"] == 0, result["stderr"]
    assert "Traceback" not in result["stderr"]
    # llama.cpp may log to stderr; the JSON document is stdout alone.
    parsed: dict[str, Any] = json.loads(result["stdout"])
    return parsed


def received(run: dict[str, Any], step: str, prefix: str = "") -> list[dict[str, Any]]:
    return [
        r
        for r in run["requests"]
        if r["step"] == step and r["method"] == "POST" and r["path"].startswith(prefix)
    ]


def refusal(ans: dict[str, Any]) -> str:
    flags = [f for f in ans["flags"] if f.startswith("endpoint_refused:")]
    assert len(flags) == 1, ans["flags"]
    return str(flags[0])


def test_no_route_out(run: dict[str, Any]) -> None:
    assert run["outbound"].startswith("OSError"), run["outbound"]


def test_ask_succeeds_offline_with_the_embedded_gguf(run: dict[str, Any]) -> None:
    gguf = answer(run, "offline-gguf")
    assert gguf["generation"] == "generative" and gguf["endpoint"] == "local-gemma"
    assert gguf["hosting"] == "on_prem" and gguf["model"].startswith("gemma")


def test_airgap_refuses_the_foreign_endpoint_and_answers_extractively(run: dict[str, Any]) -> None:
    ans = answer(run, "airgap-foreign")
    # the refusal falls back to an extractive answer, which never leaves the process
    assert ans["found"] and ans["generation"] == "extractive"
    assert ans["citations"][0]["document_id"].endswith("etcdDatabaseQuotaLowSpace.md")
    text = refusal(ans)
    assert "air-gap mode allows only on_prem endpoints, 'hyperscaler' is foreign_cloud" in text
    assert "to allow it: in air-gap mode only on_prem endpoints" in text
    assert received(run, "airgap-foreign") == []


def test_foreign_endpoint_alone_refuses_confidential_naming_the_rule(run: dict[str, Any]) -> None:
    ans = answer(run, "foreign-ticket")
    assert any(c["source"] == "tickets" for c in ans["citations"]), ans["citations"]
    text = refusal(ans)
    assert "hyperscaler: denied by" in text and "confidential-not-foreign" in text
    assert "an on-prem or regional-cloud endpoint is needed for confidential data" in text
    assert received(run, "foreign-ticket") == []


def test_router_keeps_confidential_on_prem_and_sends_internal_abroad(run: dict[str, Any]) -> None:
    # the foreign endpoint is the cheapest: it gets the internal runbook question ...
    runbook = answer(run, "mixed-runbook")
    assert runbook["endpoint"] == "hyperscaler" and runbook["generation"] == "generative"
    assert len(received(run, "mixed-runbook", "/hyperscaler/")) == 1
    # ... but the confidential ticket question goes to the on-prem endpoint only
    ticket = answer(run, "mixed-ticket")
    assert ticket["endpoint"] == "vllm" and ticket["generation"] == "generative", ticket
    assert [r["path"] for r in received(run, "mixed-ticket")] == ["/vllm/v1/chat/completions"]
    assert "vpn token" in json.dumps(received(run, "mixed-ticket")[0]["json"])


def test_foreign_server_never_received_confidential_text(run: dict[str, Any]) -> None:
    """Over the whole run, by content: no ticket text and no people-team page went abroad."""
    abroad = [r for r in run["requests"] if r["path"].startswith("/hyperscaler/")]
    assert [r["step"] for r in abroad] == ["mixed-runbook"]
    sent = json.dumps([r["json"] for r in abroad])
    assert "etcd" in sent  # what it did receive: internal runbooks
    assert "vpn token" not in sent and PII_EMAIL not in sent
    assert "background check" not in sent.lower()


def test_regional_redact_endpoint_gets_pseudonyms_answer_gets_originals(
    run: dict[str, Any],
) -> None:
    ans = answer(run, "regional-ticket")
    assert ans["endpoint"] == "eu-cloud" and ans["hosting"] == "regional_cloud"
    assert "pii_pseudonymised" in ans["flags"]
    assert PII_EMAIL in ans["text"] and "EMAIL_ADDRESS" not in ans["text"], ans["text"]
    requests = received(run, "regional-ticket", "/eu-cloud/v1/chat/completions")
    assert len(requests) == 1
    sent = json.dumps(requests[0]["json"])
    assert PII_EMAIL not in sent and PII_IBAN not in sent and "DE89370400440532013000" not in sent
    assert "<EMAIL_ADDRESS_1>" in sent and "<IBAN_CODE_1>" in sent
    assert "vpn token" in sent  # the ticket itself was sent, pseudonymised


def test_audit_show_lists_every_decision_with_its_policy_id(run: dict[str, Any]) -> None:
    result = next(r for r in run["results"] if r["step"] == "audit")
    assert result["rc"] == 0, result["stderr"]
    events = json.loads(result["stdout"])
    assert {e["action"] for e in events} == {"send_to_endpoint"}
    assert len(events) == len(STEPS)  # one decision per ask, allow or deny
    assert all(e["policy_ids"] for e in events)
    seen = [(e["decision"], e["endpoint"], tuple(e["policy_ids"])) for e in events]
    for name in ("local-gemma", "hyperscaler", "vllm", "eu-cloud"):
        assert ("allow", name, ("send-within-policy",)) in seen, seen
    denied = [ids for decision, _, ids in seen if decision == "deny"]
    assert ("airgap",) in denied
    assert any("confidential-not-foreign" in ids for ids in denied)
