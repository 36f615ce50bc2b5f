"""Procedural questions get the steps: the Mitigation list, whole and in order, cited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sovra.answer import Answer
from sovra.answer.extractive import extract_answer, is_procedural_question
from sovra.answer.sentences import split_blocks
from sovra.workspace import Workspace
from tests.support.answer import CERT_EXPIRY, DISK_PRESSURE, hit, make_site, open_workspace

RUNBOOKS = {
    "runbooks/alerts/NodeDiskPressure.md": DISK_PRESSURE,
    "runbooks/alerts/CertificateExpiringSoon.md": CERT_EXPIRY,
}
STEPS = [
    "Cordon the node so that no new pods are placed on it.",
    "Remove unused container images with crictl rmi --prune.",
    "Delete old logs under /var/log/pods that belong to deleted pods.",
    "Uncordon the node once the disk pressure condition is cleared.",
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace = open_workspace(make_site(tmp_path_factory.mktemp("procedural"), RUNBOOKS))
    yield workspace
    workspace.close()


def ask(ws: Workspace, question: str, user: str = "alice") -> Answer:
    final = None
    for event in ws.ask(ws.principal_for(user, "ask", question), question):
        final = event.answer or final
    assert final is not None
    return final


def test_question_intent() -> None:
    for q in [
        "what should I do when etcd database quota is low?",
        "How do I free disk space on a node?",
        "how to rotate the certificate",
        "Was soll ich tun, wenn die Festplatte voll ist?",
        "Wie behebe ich den Fehler?",
        "¿Qué debo hacer cuando el disco está lleno?",
    ]:
        assert is_procedural_question(q), q
    for q in [
        "How many pods are evicted?",
        "What happens when a node has disk pressure?",
        "Who wrote the runbook?",
        "Wie viele Knoten gibt es?",
    ]:
        assert not is_procedural_question(q), q


def test_what_to_do_quotes_the_mitigation_steps_in_order(ws: Workspace) -> None:
    answer = ask(ws, "what should I do when a node has disk pressure?")
    assert answer.found
    positions = [answer.text.find(step) for step in STEPS]
    assert -1 not in positions, answer.text
    assert positions == sorted(positions)  # document order
    for n, step in enumerate(STEPS, start=1):
        assert f"{n}. {step}" in answer.text  # each item whole, numbered as in the runbook
    # The Impact section restates the problem; it is not what was asked.
    assert "refuses to schedule new ones" not in answer.text
    cite = answer.citations[0]
    assert cite.document_id == "runbooks:alerts/NodeDiskPressure.md"
    assert "Mitigation" in cite.heading_path
    assert answer.text.rstrip().endswith("[1]")
    # The citation span points at the quoted steps in the document itself.
    span = DISK_PRESSURE[cite.start : cite.end]
    assert "1. Cordon the node" in span and "4. Uncordon the node" in span


def test_the_same_runbook_answers_a_factual_question_with_its_impact(ws: Workspace) -> None:
    answer = ask(ws, "what happens to pods when a node has disk pressure?")
    assert answer.found
    assert "evicts pods" in answer.text
    assert answer.citations[0].document_id == "runbooks:alerts/NodeDiskPressure.md"


def test_instruction_keeps_its_command() -> None:
    blocks = split_blocks(DISK_PRESSURE)
    check = next(b for b in blocks if DISK_PRESSURE[b.start : b.end].startswith("Check which"))
    assert check.code == "oc adm top node --show-capacity"
    assert [b.kind for b in blocks].count("numbered") == 4


def test_lexical_only_prefers_steps_too() -> None:
    """Without the embedding model (a language it does not cover) the preference still holds."""
    impact, mitigation = DISK_PRESSURE.split("## Mitigation")
    hits = [hit(impact, 0), hit("## Mitigation" + mitigation, 1)]
    ex = extract_answer("what should I do about node disk pressure", "en", hits, None)
    assert ex.found
    assert STEPS[0] in ex.text and STEPS[-1] in ex.text
    assert ex.citations[0].document_id == "s:d1"


def test_steps_of_the_best_document_even_when_they_share_no_words(ws: Workspace) -> None:
    # The question's words are all in Meaning ("eviction threshold of the kubelet"); the steps
    # say "cordon", "remove images" — the runbook about the problem still answers with them.
    answer = ask(ws, "what should I do when the kubelet eviction threshold is reached?")
    assert answer.found
    assert STEPS[0] in answer.text and STEPS[-1] in answer.text
    assert answer.citations[0].document_id == "runbooks:alerts/NodeDiskPressure.md"
