"""All C2SP/transparency-dev Merkle test vectors (happy and malformed) and the signed-note
examples from the specs, against the verifier and our own proof builder."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sovra.audit import merkle
from sovra.audit.note import Checkpoint, NoteError, NoteVerifier, open_note, parse_note
from sovra.audit.verify import (
    ProofError,
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "data" / "vectors"
TESTDATA = VECTORS / "merkle" / "testdata"


def _files() -> list[Path]:
    return sorted(TESTDATA.rglob("*.json")) if TESTDATA.is_dir() else []


def _need_vectors() -> None:
    if not TESTDATA.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"test vectors missing at {TESTDATA}")
        pytest.skip(f"test vectors missing at {TESTDATA}")


def _b(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _proof(value: list[str] | None) -> list[bytes]:
    return [_b(h) for h in value or []]


def _run(kind: str, d: dict[str, Any]) -> None:
    if kind == "inclusion":
        verify_inclusion(
            d["leafIdx"], d["treeSize"], _b(d["leafHash"]), _proof(d["proof"]), _b(d["root"])
        )
    elif kind == "consistency":
        verify_consistency(
            d["size1"], d["size2"], _b(d["root1"]), _b(d["root2"]), _proof(d["proof"])
        )
    elif kind == "subtreeconsistency":
        verify_subtree_consistency(
            d["start"], d["end"], d["size"], _b(d["root1"]), _b(d["root2"]), _proof(d["proof"])
        )
    elif kind == "subtreeinclusion":
        verify_subtree_inclusion(
            d["leafIdx"], d["start"], d["end"], _b(d["leafHash"]), _proof(d["proof"]), _b(d["root"])
        )
    else:  # pragma: no cover - a new vector family must get a runner
        raise AssertionError(f"unknown vector family {kind}")


def test_vector_set_is_complete() -> None:
    _need_vectors()
    files = _files()
    families = {f.relative_to(TESTDATA).parts[0] for f in files}
    assert families == {"inclusion", "consistency", "subtreeinclusion", "subtreeconsistency"}
    assert len(files) >= 500
    assert any(json.loads(f.read_text())["wantErr"] for f in files)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(TESTDATA)))
def test_vector(path: Path) -> None:
    _need_vectors()
    d = json.loads(path.read_text())
    kind = path.relative_to(TESTDATA).parts[0]
    if d["wantErr"]:
        with pytest.raises(ProofError):
            _run(kind, d)
    else:
        _run(kind, d)


# The eight leaves of RFC 6962's reference tree, from which the vectors are built.
REFERENCE_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]


def _reference_nodes() -> dict[merkle.NodeId, bytes]:
    nodes: dict[merkle.NodeId, bytes] = {}
    level = [merkle.leaf_hash(e) for e in REFERENCE_LEAVES]
    lv = 0
    while level:
        nodes.update({(lv, i): h for i, h in enumerate(level)})
        level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        lv += 1
    return nodes


def test_happy_vectors_match_our_proof_builder() -> None:
    """Our generator reproduces, hash for hash, the happy-path proofs of the vectors."""
    _need_vectors()
    nodes = _reference_nodes()
    checked = 0
    for path in TESTDATA.glob("inclusion/*/happy-path.json"):
        d = json.loads(path.read_text())
        if d["treeSize"] > 8 or not d["proof"]:
            continue
        plan = merkle.inclusion_plan(d["leafIdx"], d["treeSize"])
        assert merkle.assemble(plan, nodes) == _proof(d["proof"]), path
        assert merkle.naive_root(REFERENCE_LEAVES[: d["treeSize"]]) == _b(d["root"])
        checked += 1
    for path in TESTDATA.glob("consistency/*/happy-path.json"):
        d = json.loads(path.read_text())
        if d["size2"] > 8 or d["size1"] in (0, d["size2"]):
            continue
        plan = merkle.consistency_plan(d["size1"], d["size2"])
        assert merkle.assemble(plan, nodes) == _proof(d["proof"]), path
        checked += 1
    assert checked >= 4


# The worked example of specs/signed-note.md (Verifier keys → Example).
EXAMPLE_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
EXAMPLE_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3"
    "mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_signed_note_spec_example_is_in_the_spec_file() -> None:
    _need_vectors()
    spec = (VECTORS / "specs" / "signed-note.md").read_text()
    assert EXAMPLE_VKEY in spec
    assert EXAMPLE_NOTE.split("\n\n")[1].strip() in spec


def test_signed_note_spec_example_verifies() -> None:
    verifier = NoteVerifier.parse(EXAMPLE_VKEY)
    assert verifier.name == "example.com/foo" and verifier.key_id == 0x530D903A
    assert str(verifier) == EXAMPLE_VKEY
    note, signers = open_note(EXAMPLE_NOTE, [verifier])
    assert note.text == "This is an example message.\n"
    assert signers == [verifier]


def test_signed_note_spec_example_rejects_tampering() -> None:
    verifier = NoteVerifier.parse(EXAMPLE_VKEY)
    with pytest.raises(NoteError, match="does not verify"):
        open_note(EXAMPLE_NOTE.replace("example message", "exemple message"), [verifier])


def test_opening_poem_note_parses() -> None:
    """The note at the top of signed-note.md: multi-line text with an inner blank line."""
    _need_vectors()
    spec = (VECTORS / "specs" / "signed-note.md").read_text()
    block = spec.split("```\n")[1]
    note = parse_note(block)
    assert note.text.startswith("Ognuno sta solo") and "\n\ned è subito sera.\n" in note.text
    assert note.signatures[0].name == "quasimodo.example/salvatore"


def test_checkpoint_spec_example_parses() -> None:
    _need_vectors()
    spec = (VECTORS / "specs" / "tlog-checkpoint.md").read_text()
    block = spec.split("```\n")[1]
    note = parse_note(block)
    checkpoint = Checkpoint.parse(note.text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.text() == note.text
