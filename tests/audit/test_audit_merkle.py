"""Merkle arithmetic, canonical JSON and signed notes, without storage."""

from __future__ import annotations

import base64

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from sovra.audit import merkle
from sovra.audit.event import AuditEvent, canonical, seal, unseal
from sovra.audit.note import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    add_signature,
    open_checkpoint,
    open_note,
    sign_note,
    verify_cosignatures,
)
from sovra.audit.verify import (
    ProofError,
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)


def _tree(n: int) -> tuple[list[bytes], dict[merkle.NodeId, bytes]]:
    entries = [f"entry {i}".encode() for i in range(n)]
    nodes: dict[merkle.NodeId, bytes] = {}
    level = [merkle.leaf_hash(e) for e in entries]
    lv = 0
    while level:
        nodes.update({(lv, i): h for i, h in enumerate(level)})
        level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        lv += 1
    return entries, nodes


def test_roots_agree_with_rfc_definition() -> None:
    for n in range(0, 70):
        entries, nodes = _tree(n)
        naive = merkle.naive_root(entries)
        assert merkle.root_of_leaf_hashes([merkle.leaf_hash(e) for e in entries]) == naive
        assert merkle.root_from_nodes(n, nodes.__getitem__) == naive


def test_every_inclusion_and_consistency_proof_verifies_up_to_40() -> None:
    n_max = 40
    entries, nodes = _tree(n_max)
    roots = [merkle.naive_root(entries[:n]) for n in range(n_max + 1)]
    for n in range(1, n_max + 1):
        for i in range(n):
            proof = merkle.assemble(merkle.inclusion_plan(i, n), nodes)
            verify_inclusion(i, n, merkle.leaf_hash(entries[i]), proof, roots[n])
            if proof:
                bad = [*proof[:-1], bytes(32)]
                with pytest.raises(ProofError):
                    verify_inclusion(i, n, merkle.leaf_hash(entries[i]), bad, roots[n])
        for m in range(1, n + 1):
            proof = merkle.assemble(merkle.consistency_plan(m, n), nodes) if m < n else []
            verify_consistency(m, n, roots[m], roots[n], proof)
            if m < n:
                with pytest.raises(ProofError):
                    verify_consistency(m, n, roots[m - 1] if m > 1 else bytes(32), roots[n], proof)


def test_subtree_proofs_from_our_nodes() -> None:
    entries, nodes = _tree(16)
    for start, end in [(0, 4), (4, 8), (8, 12), (8, 10), (12, 13)]:
        sub_root = merkle.naive_root(entries[start:end])
        for i in range(start, end):
            # Inclusion in the subtree = ordinary inclusion in the tree of its leaves.
            sub_entries, sub_nodes = entries[start:end], {}
            level = [merkle.leaf_hash(e) for e in sub_entries]
            lv = 0
            while level:
                sub_nodes.update({(lv, j): h for j, h in enumerate(level)})
                level = [
                    merkle.node_hash(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)
                ]
                lv += 1
            proof = merkle.assemble(merkle.inclusion_plan(i - start, end - start), sub_nodes)
            verify_subtree_inclusion(i, start, end, merkle.leaf_hash(entries[i]), proof, sub_root)
    # A complete subtree sits directly in the tree: its proof is the inclusion path above it.
    root = merkle.naive_root(entries)
    proof = merkle.assemble([(12, 16), (0, 8)], nodes)
    verify_subtree_consistency(8, 12, 16, merkle.naive_root(entries[8:12]), root, proof)
    with pytest.raises(ProofError):
        verify_subtree_consistency(8, 12, 16, merkle.naive_root(entries[0:4]), root, proof)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 1100), st.data())
def test_random_proofs_verify(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(1, n))
    leaves = [merkle.leaf_hash(str(k).encode()) for k in range(n)]
    nodes: dict[merkle.NodeId, bytes] = {}
    level, lv = leaves, 0
    while level:
        nodes.update({(lv, j): h for j, h in enumerate(level)})
        level = [merkle.node_hash(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        lv += 1
    root_n = merkle.root_from_nodes(n, nodes.__getitem__)
    root_m = merkle.root_from_nodes(m, nodes.__getitem__)
    verify_inclusion(i, n, leaves[i], merkle.assemble(merkle.inclusion_plan(i, n), nodes), root_n)
    proof = merkle.assemble(merkle.consistency_plan(m, n), nodes) if m < n else []
    verify_consistency(m, n, root_m, root_n, proof)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_fast_canonical_json_equals_rfc8785(value: object) -> None:
    assert canonical(value) == bytes(rfc8785.dumps(value))


def test_canonical_falls_back_for_floats_and_unicode() -> None:
    for value in [{"a": 1.5}, {"\u00e9": 1, "z": 2}, {"\U0001f600": 1, "\ufb01": 2}, [1e21]]:
        assert canonical(value) == bytes(rfc8785.dumps(value))


def test_event_requires_timezone_and_subject_for_personal() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="timezone"):
        AuditEvent(actor="a", action="b", time=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="subject"):
        seal(AuditEvent(actor="a", action="b", personal={"q": "x"}), None, None)


def test_sealed_event_hides_actor_and_personal_fields() -> None:
    import json
    import os

    key = os.urandom(32)
    ev = AuditEvent(
        actor="user:zoe", action="ask", subject="zoe", personal={"query": "zoe's payslip"}
    )
    data = seal(ev, "subject:abc", key)
    assert b"zoe" not in data and b"payslip" not in data
    record = json.loads(data)
    assert unseal(record, key)["actor"] == "user:zoe"
    assert unseal(record, key)["personal"] == {"query": "zoe's payslip"}
    assert unseal(record, None)["personal"] == "erased"
    assert unseal(record, os.urandom(32))["actor"] == "erased"
    # The ciphertext is bound to its pseudonym: moved to another subject it does not open.
    moved = dict(record, sealed={**record["sealed"], "subject": "subject:other"})
    assert unseal(moved, key)["actor"] == "erased"


def test_checkpoint_note_roundtrip_and_forgeries() -> None:
    signer = NoteSigner.generate("example.org/log")
    other = NoteSigner.generate("example.org/log")
    cp = Checkpoint("example.org/log", 5, bytes(range(32)))
    note = sign_note(cp.text(), signer)
    parsed, _ = open_checkpoint(note, [signer.verifier], "example.org/log")
    assert parsed == cp
    with pytest.raises(NoteError, match="not signed by any trusted key"):
        open_checkpoint(note, [other.verifier])
    with pytest.raises(NoteError, match="expected"):
        open_checkpoint(note, [signer.verifier], "example.org/other")
    root_b64 = base64.b64encode(cp.root).decode()
    for forged in (
        note.replace("\n5\n", "\n6\n"),
        note.replace(root_b64, base64.b64encode(bytes(32)).decode()),
    ):
        with pytest.raises(NoteError, match="does not verify"):
            open_checkpoint(forged, [signer.verifier])
    # A key of another log name cannot vouch for this origin.
    stranger = NoteSigner.generate("example.org/other")
    with pytest.raises(NoteError, match="not signed by that log"):
        open_checkpoint(sign_note(cp.text(), stranger), [stranger.verifier])


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "no blank line\n",
        "text\n\nnot a signature\n",
        "text\n\n\u2014 name AAAA\n",
        "text\n\n\u2014 name !!notbase64\n",
        "te\x01xt\n\n\u2014 name AAAAAAAA\n",
    ],
)
def test_malformed_notes_are_rejected(bad: str) -> None:
    signer = NoteSigner.generate("n")
    with pytest.raises(NoteError):
        open_note(bad, [signer.verifier])


def test_unknown_signatures_are_ignored_and_bad_known_ones_reject() -> None:
    a, b = NoteSigner.generate("a.example"), NoteSigner.generate("b.example")
    note = sign_note("hello\n", a, b)
    # Trusting only a: b's line is an unknown key and is ignored.
    assert open_note(note, [a.verifier])[1] == [a.verifier]
    # b's line with b's key id but a broken signature: a known key failing rejects the note.
    b_line = note.split("\u2014 b.example ")[1].strip()
    kid = base64.b64decode(b_line)[:4]
    broken = note.replace(b_line, base64.b64encode(kid + bytes(64)).decode())
    with pytest.raises(NoteError, match="does not verify"):
        open_note(broken, [a.verifier, b.verifier])


def test_cosignature_add_and_verify() -> None:
    log = NoteSigner.generate("example.org/log")
    witness = NoteSigner.generate("witness.example/w1", ALG_COSIGNATURE_V1)
    note = sign_note(Checkpoint("example.org/log", 3, bytes(32)).text(), log)
    cosigned = add_signature(note, witness, timestamp=1_700_000_000)
    assert verify_cosignatures(cosigned, [witness.verifier]) == [witness.verifier]
    assert verify_cosignatures(note, [witness.verifier]) == []
    # The log key still opens it; the cosignature line is just an unknown key to it.
    open_checkpoint(cosigned, [log.verifier])
    vkey = str(witness.verifier)
    assert NoteVerifier.parse(vkey) == witness.verifier
    tampered = cosigned.replace("example.org/log\n3\n", "example.org/log\n4\n")
    with pytest.raises(NoteError):
        verify_cosignatures(tampered, [witness.verifier])


@pytest.mark.parametrize(
    "vkey",
    [
        "nokeyparts",
        "name+zzzzzzzz+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+AAAA",
        "exa mple+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ],
)
def test_bad_verifier_keys(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.parse(vkey)
