"""Test sets from the customer's data: labels respected, review scripted, evaluated and tracked."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sovra.cli import app
from sovra.config import load_config
from sovra.evals.testset import cloze_question, key_term, load
from sovra.evals.tracking import list_runs, load_artifact, tracking_uri
from sovra.workspace import Workspace

runner = CliRunner()

HANDBOOK = {
    "leave.md": "# Leave\n\nEmployees receive 30 days of paid annual leave per calendar year.\n"
    "Unused leave expires on 31 March of the following year unless Payroll approves a carry-over.\n",
    "travel.md": "# Travel\n\nTrain journeys longer than four hours may be booked in first class.\n"
    "Hotel costs are reimbursed up to 150 euros per night within Germany.\n",
    "security.md": "# Security\n\nLaptops must be encrypted with BitLocker before they leave the office.\n"
    "Lost devices are reported to the Security desk within two hours.\n",
}
SALARIES = {
    "bands.md": "# Salary bands\n\nBand C engineers earn between 72000 and 86000 euros per year.\n"
    "Raises above eight percent need approval from the Compensation committee.\n",
    "bonus.md": "# Bonus\n\nThe annual bonus pool is set by the Executive board each February.\n",
}

CONFIG = """
[workspace]
home = "data"

[[sources]]
name = "handbook"
kind = "folder"
path = "handbook"
access = ["public"]
classification = "internal"

[[sources]]
name = "salaries"
kind = "folder"
path = "salaries"
access = ["group:hr"]
classification = "confidential"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("testset-site")
    for folder, files in (("handbook", HANDBOOK), ("salaries", SALARIES)):
        (root / folder).mkdir()
        for name, text in files.items():
            (root / folder / name).write_text(text, encoding="utf-8")
    cfg = root / "sovra.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    config = load_config(cfg)
    ws = Workspace.open(config)
    ws.directory.add_user("admin", ["admins"])
    ws.directory.add_user("hanna", ["hr"])
    ws.directory.add_user("eve", ["staff"])
    for source in config.sources:
        ws.sync(source)
    ws.close()
    return cfg


def sovra(cfg: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--config", str(cfg), *args])
    return result.exit_code, result.output


def generate(site: Path, source: str, name: str, user: str, *extra: str) -> tuple[int, str]:
    return sovra(
        site, "eval", "testset", "generate", "--source", source, "--name", name, "--as", user,
        *extra,
    )  # fmt: skip


def test_a_principal_cannot_sample_what_it_cannot_read(site: Path) -> None:
    code, output = generate(site, "salaries", "eve-salaries", "eve")
    assert code == 1, output
    assert "can read no indexed passage" in output
    assert not (site.parent / "data" / "testsets" / "eve-salaries.jsonl").exists()


def test_a_restricted_source_passes_its_classification_to_the_test_set(site: Path) -> None:
    code, output = generate(site, "salaries", "hr-salaries", "hanna", "--json")
    assert code == 0, output
    header = json.loads(output)
    assert header["classification"] == "confidential"
    path = Path(header["path"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ts = load(site.parent / "data", "hr-salaries")
    assert {i.classification for i in ts.items} == {"confidential"}
    assert {i.source for i in ts.items} == {"salaries"}
    assert all(i.status == "pending" and i.method == "heuristic" for i in ts.items)


def test_generate_review_and_run_a_test_set(site: Path) -> None:
    home = site.parent / "data"
    code, output = sovra(
        site, "eval", "testset", "generate", "--source", "handbook", "--as", "eve", "--size", "10"
    )
    assert code == 0, output
    ts = load(home, "handbook")
    assert len(ts.items) == 3 and ts.classification == "internal"
    first, second, third = (i.id for i in ts.items)
    code, output = sovra(
        site, "eval", "testset", "review", "handbook", "--accept", first, "--reject", second
    )
    assert code == 0, output
    code, output = sovra(
        site,
        "eval",
        "testset",
        "review",
        "handbook",
        "--edit",
        third,
        "--question",
        "How long do I have to report a lost laptop?",
        "--answer",
        "within two hours",
    )
    assert code == 0, output
    ts = load(home, "handbook")
    assert [i.status for i in ts.items] == ["accepted", "rejected", "accepted"]
    assert ts.items[2].edited and ts.items[2].question.startswith("How long")

    code, output = sovra(site, "eval", "run", "--testset", "handbook", "--as", "eve", "--json")
    assert code == 0, output
    run = json.loads(output)
    m = run["metrics"]
    assert m["testset.handbook.questions"] == 2
    assert 0.0 <= m["testset.handbook.retrieval.hit10"] <= 1.0
    assert "testset.handbook.answers.f1" in m
    uri = tracking_uri(load_config(site))
    tracked = list_runs(uri)
    assert tracked[0].run_id == run["run_id"]
    assert tracked[0].params["sovra_version"]
    assert tracked[0].params["policy_set"].startswith("sha256:")
    # Evaluation questions stay out of the drift monitor's query log.
    assert not (home / "monitor" / "queries.sqlite").exists()
    art = load_artifact(uri, run["run_id"], "testset-handbook")
    assert [r["id"] for r in art["per_query"]] == [first, third]


def test_the_cloze_heuristic_blanks_the_key_term() -> None:
    assert key_term("Employees receive 30 days of paid annual leave per calendar year.") == "30"
    assert key_term("Lost devices are reported to the Security desk quickly.") == "Security"
    from tests.support.index import chunk

    made = cloze_question(
        chunk(
            "c1", 0, text="Laptops must be encrypted with BitLocker before they leave the office."
        )
    )
    assert made is not None
    question, answer = made
    assert answer == "BitLocker" and "_____" in question and "BitLocker" not in question


def test_the_generator_gets_only_passages_the_router_allows(site: Path) -> None:
    """A generator endpoint cleared for `internal` writes the handbook's questions; the
    confidential salaries never reach it (router refusal, logged) and get the heuristic."""
    from tests.support.models import Reply, ScriptedServer, chunk_json

    reply = Reply(
        sse=[chunk_json("Q: How many days of paid leave do employees get?\nA: 30 days"),
             chunk_json(None, "stop"), "[DONE]"]
    )  # fmt: skip
    with ScriptedServer([reply]) as server:
        gen = site.parent / "gen.toml"
        gen.write_text(
            CONFIG
            + f"""
[[endpoints]]
name = "qgen"
kind = "openai"
base_url = "{server.url}"
model = "m"
hosting = "on_prem"
max_classification = "internal"
pii = "allow"
max_retries = 0
""",
            encoding="utf-8",
        )
        code, output = generate(gen, "salaries", "gen-salaries", "hanna", "--endpoint", "qgen")
        assert code == 0, output
        assert server.requests == []
        ws = Workspace.open(load_config(gen))
        routed = [e.view for e in ws.audit.events(action="send_to_endpoint")]
        ws.close()
        assert [v["decision"] for v in routed] == ["deny", "deny"]  # one per salaries passage
        salaries = load(site.parent / "data", "gen-salaries")
        assert {i.method for i in salaries.items} == {"heuristic"}

        code, output = generate(gen, "handbook", "gen-handbook", "eve", "--endpoint", "qgen")
        assert code == 0, output
        assert len(server.requests) == 3
        sent = json.dumps([r["json"] for r in server.requests])
        assert "Salary" not in sent and "Band C" not in sent
    handbook = load(site.parent / "data", "gen-handbook")
    assert {i.method for i in handbook.items} == {"generator:qgen"}
    assert handbook.items[0].question == "How many days of paid leave do employees get?"
    assert handbook.items[0].answer == "30 days"
