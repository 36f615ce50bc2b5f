"""New-document triggers read as the run's principal, and a draft's routing sees what its
prompt holds (issue 14, §1.7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sovra.answer import AnswerEvent
from sovra.answer.routing import config_choice
from sovra.answer.types import Answer
from sovra.config import load_config
from sovra.domain import Chunk, Principal, QueryOptions
from sovra.workspace import Workspace, open_flows
from tests.support.answer import hit
from tests.support.flows import FakeIndex, adapters, classifiers, config, make_site
from tests.support.flows import doc_chunk as chunk

SOURCE = """
[[sources]]
name = "tickets"
kind = "folder"
path = "t"
access = ["group:it-support"]
classification = "internal"
"""

ON_DOCUMENT = """\
name: ondoc
trigger: {kind: new_document, source: tickets, run_as: bob}
inputs:
  document_id: {type: string}
  title: {type: string}
  text: {type: text}
  classification: {type: string}
access: [group:staff]
actions: [store]
steps:
  - id: reply
    kind: draft
    question: "${input.title}: ${input.text}"
  - id: record
    kind: act
    adapter: store
    params: {doc: "${input.document_id}", draft: "${steps.reply.text}"}
"""


class Asked:
    """Stands in for the workspace's ask: records what the draft step asked with."""

    def __init__(self) -> None:
        self.options: list[QueryOptions] = []

    def __call__(
        self, principal: Principal, question: str, options: QueryOptions | None = None
    ) -> Iterator[AnswerEvent]:
        assert options is not None
        self.options.append(options)
        yield AnswerEvent(answer=Answer(question=question, text="drafted", found=True))


def test_trigger_passes_only_documents_the_run_as_user_may_read(tmp_path: Path) -> None:
    make_site(tmp_path, SOURCE)
    (tmp_path / "data/workflows/ondoc.yaml").write_text(ON_DOCUMENT, encoding="utf-8")
    index = FakeIndex()
    asked = Asked()
    with open_flows(
        config(tmp_path), adapters=adapters(tmp_path), classifiers=classifiers()
    ) as flows:
        flows.ws._index = index  # type: ignore[assignment]
        flows.ws.ask = asked  # type: ignore[method-assign]
        flows.fire_triggers()
        index.docs["tickets:mine"] = chunk("tickets:mine", "printer jam", "group:it-support")
        index.docs["tickets:secret"] = chunk(
            "tickets:secret", "board salary list", "group:admins", "confidential"
        )
        runs, errors = flows.fire_triggers()
    assert [r.inputs["document_id"] for r in runs] == ["tickets:mine"]
    (run,) = runs
    assert run.inputs["text"] == "printer jam" and run.inputs["classification"] == "internal"
    assert run.labels == {
        "documents": [{"id": "tickets:mine", "classification": "internal"}],
        "classification": "internal",
    }
    assert errors == []
    # The draft's prompt holds the document: its chunks go along, so routing counts them.
    (options,) = asked.options
    assert [c.id for c in options.context] == ["tickets:mine#0"]


def test_unreadable_new_document_is_logged_not_run(tmp_path: Path) -> None:
    make_site(tmp_path, SOURCE)
    plain = ON_DOCUMENT.replace("  classification: {type: string}\n", "")
    (tmp_path / "data/workflows/ondoc.yaml").write_text(plain, encoding="utf-8")
    index = FakeIndex()
    with open_flows(config(tmp_path), adapters=adapters(tmp_path)) as flows:
        flows.ws._index = index  # type: ignore[assignment]
        flows.fire_triggers()
        index.docs["tickets:secret"] = chunk("tickets:secret", "salaries", "group:admins")
        assert flows.fire_triggers() == ([], [])
        assert flows.runs() == []
    ws = Workspace.open(config(tmp_path))
    try:
        skipped = [e.view for e in ws.audit.events() if e.view["action"] == "flow.trigger"]
    finally:
        ws.close()
    assert [(e["decision"], e["outcome"]) for e in skipped] == [("deny", "not_readable")]
    assert b"salaries" not in b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*.db"))


ENDPOINT = """
[[endpoints]]
name = "local-model"
kind = "embedded"
model = "tiny"
jurisdiction = "eu-de"
hosting = "on_prem"
max_classification = "internal"
"""


class Gen:
    instruction_tuned = True
    model_id = "tiny"


def test_routing_takes_the_strictest_label_of_everything_in_the_prompt(tmp_path: Path) -> None:
    make_site(tmp_path, ENDPOINT.replace("[[endpoints]]", "\n[[endpoints]]"))
    cfg = load_config(tmp_path / "sovra.toml")
    ws = Workspace.open(cfg)
    decisions: list[Any] = []
    try:
        bob = ws.principal("bob")

        def choose(context: tuple[Chunk, ...]) -> Any:
            chooser = config_choice(
                cfg,
                router=ws.router,
                load_generator=lambda ep: Gen(),  # type: ignore[arg-type,return-value]
                pseudonymise=ws.pseudonymise,
                on_decision=lambda p, d, h: decisions.append(d),
                context=context,
            )
            return chooser("q", bob, [hit("internal runbook text")], "local-model", False)

        assert choose(()).endpoint_config is not None  # internal chunks alone: allowed
        secret = chunk("tickets:secret", "salaries", "group:it-support", "confidential")
        refused = choose((secret,))
    finally:
        ws.close()
    assert refused.endpoint_config is None and "endpoint_refused" in refused.reason
    assert [d.classification for d in decisions] == ["internal", "confidential"]


def test_a_capped_draft_refuses_inputs_classified_above_its_cap(tmp_path: Path) -> None:
    make_site(tmp_path, SOURCE.replace('"internal"', '"confidential"'))
    capped = ON_DOCUMENT.replace(
        '    question: "${input.title}: ${input.text}"',
        '    question: "${input.title}: ${input.text}"\n    max_classification: internal',
    )
    (tmp_path / "data/workflows/ondoc.yaml").write_text(capped, encoding="utf-8")
    index = FakeIndex()
    asked = Asked()
    with open_flows(config(tmp_path), adapters=adapters(tmp_path)) as flows:
        flows.ws._index = index  # type: ignore[assignment]
        flows.ws.ask = asked  # type: ignore[method-assign]
        flows.fire_triggers()
        index.docs["tickets:c"] = chunk(
            "tickets:c", "merger plan", "group:it-support", "confidential"
        )
        (run,), _ = flows.fire_triggers()
    assert run.status == "failed" and "capped at max_classification = internal" in (run.error or "")
    assert asked.options == []  # the confidential text never reached an answer
