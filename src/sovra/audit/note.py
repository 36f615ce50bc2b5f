"""C2SP signed notes (Ed25519, type 0x01), tlog-checkpoints and tlog-cosignatures (type 0x04).

Pure functions over text and keys: the log signs checkpoints with `NoteSigner`, anyone checks
them with `NoteVerifier` built from a verifier-key string (`name+hexid+base64`), which is all a
receipt holder needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sovra.errors import Invalid

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 64
MAX_NOTE_BYTES = 1 << 20
_DASH = "\u2014 "


class NoteError(Invalid, ValueError):
    """A note, key or checkpoint is malformed or its signatures do not verify."""


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what} is not valid base64") from None


def key_id(name: str, alg: int, public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NoteVerifier:
    """A verifier key: name, key id, algorithm byte and Ed25519 public key."""

    name: str
    key_id: int
    alg: int
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key must look like name+hexid+base64key")
        name, hex_id, b64 = parts
        _check_name(name)
        if len(hex_id) != 8:
            raise NoteError("verifier key id must be 8 hex digits")
        try:
            kid = int(hex_id, 16)
        except ValueError:
            raise NoteError("verifier key id must be 8 hex digits") from None
        raw = _b64decode(b64, "verifier key")
        if len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise NoteError("verifier key is not an Ed25519 (0x01) or cosignature (0x04) key")
        if key_id(name, raw[0], raw[1:]) != kid:
            raise NoteError(f"verifier key id {hex_id} does not match the key for {name!r}")
        return cls(name, kid, raw[0], raw[1:])

    def __str__(self) -> str:
        raw = base64.b64encode(bytes([self.alg]) + self.public).decode()
        return f"{self.name}+{self.key_id:08x}+{raw}"

    def _check(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def verify(self, text: bytes, sig: bytes) -> bool:
        """Check a signature (without its 4-byte key id prefix) over the note text."""
        if self.alg == ALG_ED25519:
            return len(sig) == 64 and self._check(sig, text)
        # tlog-cosignature/v1: u64 timestamp || ed25519 signature over a framed message.
        if len(sig) != 72:
            return False
        (timestamp,) = struct.unpack(">Q", sig[:8])
        if timestamp >= 1 << 63:
            return False
        return self._check(sig[8:], cosignature_message(text, timestamp))


def cosignature_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 signing key with its note key name (log key: 0x01, witness: 0x04)."""

    name: str
    private: Ed25519PrivateKey
    alg: int = ALG_ED25519

    def __post_init__(self) -> None:
        _check_name(self.name)

    @classmethod
    def generate(cls, name: str, alg: int = ALG_ED25519) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate(), alg)

    @property
    def verifier(self) -> NoteVerifier:
        public = _raw_public(self.private.public_key())
        return NoteVerifier(self.name, key_id(self.name, self.alg, public), self.alg, public)

    def sign(self, text: bytes, timestamp: int | None = None) -> bytes:
        """Signature bytes with the key id prefix, ready for a signature line."""
        kid = struct.pack(">I", self.verifier.key_id)
        if self.alg == ALG_ED25519:
            return kid + self.private.sign(text)
        ts = int(time.time()) if timestamp is None else timestamp
        return kid + struct.pack(">Q", ts) + self.private.sign(cosignature_message(text, ts))

    def to_private_string(self) -> str:
        """The golang.org/x/mod/sumdb/note private key encoding (seed, not expanded key)."""
        seed = self.private.private_bytes_raw()
        raw = base64.b64encode(bytes([self.alg]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id:08x}+{raw}"

    @classmethod
    def from_private_string(cls, text: str) -> NoteSigner:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("not a signing key (expected PRIVATE+KEY+name+hexid+base64)")
        name, hex_id, b64 = parts[2:]
        raw = _b64decode(b64, "signing key")
        if len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise NoteError("signing key is not an Ed25519 key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]), raw[0])
        if f"{signer.verifier.key_id:08x}" != hex_id.lower():
            raise NoteError("signing key id does not match its key material")
        return signer


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    sig: bytes  # without the key id prefix

    def line(self) -> str:
        raw = base64.b64encode(struct.pack(">I", self.key_id) + self.sig).decode()
        return f"{_DASH}{self.name} {raw}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]

    def __str__(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def parse_note(data: str) -> Note:
    """Split a signed note into text and signature lines (no verification yet)."""
    if len(data.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteError("note is too large")
    if any(ord(c) < 0x20 and c != "\n" for c in data):
        raise NoteError("note contains control characters")
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, sigblock = data[: split + 1], data[split + 2 :]
    if not sigblock.endswith("\n"):
        raise NoteError("note signatures must end with a newline")
    sigs: list[Signature] = []
    for line in sigblock[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise NoteError("malformed signature line in note")
        name, sep, b64 = line[len(_DASH) :].rpartition(" ")
        if not sep:
            raise NoteError("malformed signature line in note")
        _check_name(name)
        raw = _b64decode(b64, "note signature")
        if len(raw) < 5:
            raise NoteError("note signature is too short")
        sigs.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    if not sigs:
        raise NoteError("note has no signatures")
    if len(sigs) > MAX_SIGNATURES:
        raise NoteError("note has too many signatures")
    return Note(text, tuple(sigs))


def sign_note(text: str, *signers: NoteSigner) -> str:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    body = text.encode("utf-8")
    sigs = tuple(Signature(s.name, s.verifier.key_id, s.sign(body)[4:]) for s in signers)
    return str(Note(text, sigs))


def add_signature(note: str, signer: NoteSigner, timestamp: int | None = None) -> str:
    """Append one more signature (e.g. a witness cosignature) to a signed note."""
    parsed = parse_note(note)
    sig = Signature(
        signer.name, signer.verifier.key_id, signer.sign(parsed.text.encode("utf-8"), timestamp)[4:]
    )
    return str(Note(parsed.text, (*parsed.signatures, sig)))


def open_note(data: str, verifiers: list[NoteVerifier]) -> tuple[Note, list[NoteVerifier]]:
    """Verify a note: returns it with the known keys that signed it.

    Signatures from unknown keys are ignored (that is what lets keys rotate and witnesses
    cosign); a known key with a bad signature rejects the whole note; no good known
    signature rejects it too.
    """
    note = parse_note(data)
    known = {(v.name, v.key_id): v for v in verifiers}
    body = note.text.encode("utf-8")
    good: list[NoteVerifier] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(body, sig.sig):
            raise NoteError(f"signature by {sig.name} ({sig.key_id:08x}) does not verify")
        good.append(verifier)
    if not good:
        raise NoteError("note is not signed by any trusted key")
    return note, good


@dataclass(frozen=True)
class Checkpoint:
    """The tlog-checkpoint note text: origin, tree size, root hash (+ extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise NoteError("checkpoint needs origin, size and root hash lines")
        origin, size_s, root_s = lines[:3]
        if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
            raise NoteError(f"checkpoint tree size {size_s!r} is not a decimal number")
        root = _b64decode(root_s, "checkpoint root hash")
        if len(root) != 32:
            raise NoteError("checkpoint root hash must be 32 bytes")
        return cls(origin, int(size_s), root, tuple(lines[3:]))


def open_checkpoint(
    note: str, verifiers: list[NoteVerifier], origin: str | None = None
) -> tuple[Checkpoint, list[NoteVerifier]]:
    """Verify a signed checkpoint with the log's keys; `origin` pins the expected log."""
    log_keys = [v for v in verifiers if v.alg == ALG_ED25519]
    parsed, signers = open_note(note, log_keys)
    checkpoint = Checkpoint.parse(parsed.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint is from log {checkpoint.origin!r}, expected {origin!r}")
    if not any(s.name == checkpoint.origin for s in signers):
        raise NoteError(f"checkpoint for {checkpoint.origin!r} is not signed by that log's key")
    return checkpoint, signers


def verify_cosignatures(note: str, witnesses: list[NoteVerifier]) -> list[NoteVerifier]:
    """The witnesses (0x04 keys) whose cosignatures on this checkpoint verify."""
    keys = [w for w in witnesses if w.alg == ALG_COSIGNATURE_V1]
    if not keys:
        return []
    try:
        _, good = open_note(note, keys)
    except NoteError as exc:
        if "not signed by any trusted key" in str(exc):
            return []
        raise
    return good
