"""Workflow YAML: every mistake is reported with file:line and what to do; the shipped triage loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovra.flows.base import FlowError
from sovra.flows.definition import DefinitionError, coerce_inputs, load_all, parse
from tests.support.flows import WORKFLOW


def _error(text: str) -> str:
    with pytest.raises(DefinitionError) as info:
        parse(text, "w.yaml")
    return str(info.value)


def test_valid_workflow_parses() -> None:
    wf = parse(WORKFLOW, "w.yaml")
    assert [s.kind for s in wf.steps] == ["classify", "branch", "approve", "act", "act"]


def test_shipped_triage_loads(tmp_path: Path) -> None:
    found = load_all(tmp_path)
    wf, path = found["triage"]
    assert path.name == "triage.yaml"
    assert wf.actions == ("ticket_store", "email")
    assert "approval" in [s.id for s in wf.steps]


def test_unknown_step_kind_names_its_line() -> None:
    text = WORKFLOW.replace("    kind: approve", "    kind: aprove")
    line = text.splitlines().index("    kind: aprove") + 1
    msg = _error(text)
    assert msg.startswith(f"w.yaml:{line}:")
    assert "kind" in msg and "approve" in msg


def test_unknown_field_names_its_line() -> None:
    text = WORKFLOW.replace("    group: it-support", "    grop: it-support")
    line = text.splitlines().index("    grop: it-support") + 1
    msg = _error(text)
    assert f"w.yaml:{line}:" in msg
    assert "unknown field" in msg


def test_missing_required_field() -> None:
    text = WORKFLOW.replace("    group: it-support\n", "")
    assert "`group` is required here" in _error(text)


def test_reference_to_unknown_input_names_its_line() -> None:
    text = WORKFLOW.replace("${input.requester_email}", "${input.requester_mail}")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "requester_mail}" in t)
    msg = _error(text)
    assert msg.startswith(f"w.yaml:{line}:")
    assert "no such input" in msg and "requester_email" in msg


def test_reference_to_later_step_is_refused() -> None:
    text = WORKFLOW.replace(
        'text: "${input.title} ${input.body}"', 'text: "${steps.update.outcome}"'
    )
    msg = _error(text)
    assert "no earlier step 'update'" in msg


def test_reference_to_unknown_output_lists_outputs() -> None:
    text = WORKFLOW.replace("${steps.category.label}", "${steps.category.lable}")
    msg = _error(text)
    assert "outputs confidence, display, label, name, names, scores" in msg


def test_recipient_from_a_step_output_is_refused() -> None:
    text = WORKFLOW.replace('to: ["${input.requester_email}"]', 'to: ["${steps.category.label}"]')
    text = text.replace("actions: [store, mail]", "actions: [store, email]").replace(
        "adapter: mail", "adapter: email"
    )
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "to: [" in t)
    msg = _error(text)
    assert msg.startswith(f"w.yaml:{line}:")
    assert "never come from a step's output" in msg


def test_adapter_outside_allow_list() -> None:
    text = WORKFLOW.replace("actions: [store, mail]", "actions: [store]")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "adapter: mail" in t)
    msg = _error(text)
    assert msg.startswith(f"w.yaml:{line}:") and "allow-list" in msg


def test_branch_backwards_and_unknown_targets() -> None:
    assert "must come after" in _error(WORKFLOW.replace("else: update", "else: category"))
    assert "no step 'nowhere'" in _error(WORKFLOW.replace("else: update", "else: nowhere"))


def test_duplicate_ids_and_bad_yaml_and_bad_cron() -> None:
    assert "used twice" in _error(WORKFLOW.replace("- id: notify", "- id: update"))
    msg = _error(WORKFLOW.replace("trigger: manual", "trigger: [manual"))
    assert msg.startswith("w.yaml:") and "not valid YAML" in msg
    msg = _error(WORKFLOW.replace("trigger: manual", "trigger: {kind: schedule, cron: 'daily'}"))
    assert "5 fields" in msg


def test_file_name_must_match_and_duplicates_in_a_tier(tmp_path: Path) -> None:
    wf_dir = tmp_path / "workflows"
    wf_dir.mkdir()
    (wf_dir / "other.yaml").write_text(WORKFLOW, encoding="utf-8")
    with pytest.raises(DefinitionError, match=r"other\.yaml:1: .*rename the file to ticket\.yaml"):
        load_all(tmp_path)


def test_inputs_are_typed() -> None:
    wf = parse(WORKFLOW, "w.yaml")
    good = {"title": "t", "body": "b\nc", "impact": "3", "requester_email": "a@b.org"}
    assert coerce_inputs(wf, good)["impact"] == 3
    with pytest.raises(FlowError, match="'impact' must be an integer"):
        coerce_inputs(wf, {**good, "impact": "high"})
    with pytest.raises(FlowError, match="'requester_email' must be one e-mail address"):
        coerce_inputs(wf, {**good, "requester_email": "a@b.org, x@evil.example"})
    with pytest.raises(FlowError, match="'title' must be one line"):
        coerce_inputs(wf, {**good, "title": "a\nBcc: x@evil.example"})
    with pytest.raises(FlowError, match="no input cc"):
        coerce_inputs(wf, {**good, "cc": "x@evil.example"})
    with pytest.raises(FlowError, match=r"'body' .* is required"):
        coerce_inputs(wf, {k: v for k, v in good.items() if k != "body"})


def test_a_broken_file_does_not_hide_the_others(tmp_path: Path) -> None:
    wf_dir = tmp_path / "workflows"
    wf_dir.mkdir()
    (wf_dir / "ticket.yaml").write_text(WORKFLOW, encoding="utf-8")
    (wf_dir / "triage.yaml").write_text(
        WORKFLOW.replace("name: ticket", "name: triage").replace("kind: approve", "kind: aprove"),
        encoding="utf-8",
    )
    errors: list[DefinitionError] = []
    found = load_all(tmp_path, errors=errors)
    assert "ticket" in found
    assert "triage" not in found  # a broken override never falls back to the shipped one
    assert len(errors) == 1 and str(errors[0]).startswith(f"{wf_dir / 'triage.yaml'}:")
