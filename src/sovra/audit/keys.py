"""The log's signing key and the public keys that verify its checkpoints, as files.

Layout under `<home>/audit/keys/` (all created 0600):
  log.key         current signing key (golang note PRIVATE+KEY format); or $SOVRA_AUDIT_KEY
  trusted.vkeys   every log verifier key ever used, one per line; rotation appends, never
                  removes, so old checkpoints and receipts stay verifiable
  witnesses.vkeys optional witness cosigner keys (type 0x04) whose cosignatures are checked
Trust comes from these files, never from the log store.
"""

from __future__ import annotations

import os
from pathlib import Path

from sovra.audit.note import ALG_COSIGNATURE_V1, NoteError, NoteSigner, NoteVerifier
from sovra.errors import Invalid
from sovra.storage import atomic_write, private_dir

KEY_ENV = "SOVRA_AUDIT_KEY"


class KeyFileError(Invalid):
    """A key file is missing, unreadable, too open, or for another log."""


def write_secret_file(path: Path, text: str) -> None:
    """Atomically write `text` to `path` with mode 0600 (never briefly world-readable)."""
    private_dir(path.parent)
    atomic_write(path, text, mode=0o600)


def create_secret_file(path: Path, text: str) -> bool:
    """Like write_secret_file, but never replaces an existing file; False if one exists."""
    private_dir(path.parent)
    try:
        atomic_write(path, text, mode=0o600, exclusive=True)
    except FileExistsError:
        return False
    return True


def read_vkeys(path: Path) -> list[NoteVerifier]:
    if not path.exists():
        return []
    keys: list[NoteVerifier] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                keys.append(NoteVerifier.parse(line))
            except NoteError as exc:
                raise KeyFileError(f"{path}:{n}: {exc}") from None
    return keys


class KeyRing:
    """Loads or creates the signing key; knows every trusted log key and witness key."""

    def __init__(self, directory: Path, key_path: Path | None = None) -> None:
        self.directory = directory
        env = os.environ.get(KEY_ENV)
        self.key_path = key_path or (Path(env) if env else directory / "log.key")
        self.trusted_path = directory / "trusted.vkeys"
        self.witnesses_path = directory / "witnesses.vkeys"

    def load_or_create(self, origin: str) -> NoteSigner:
        if self.key_path.exists():
            mode = self.key_path.stat().st_mode & 0o077
            if mode:
                raise KeyFileError(
                    f"{self.key_path} is readable by other users; run chmod 600 {self.key_path}"
                )
            try:
                signer = NoteSigner.from_private_string(self.key_path.read_text("utf-8"))
            except (NoteError, ValueError) as exc:
                raise KeyFileError(f"{self.key_path}: {exc}") from None
            if signer.name != origin:
                raise KeyFileError(
                    f"{self.key_path} signs for log {signer.name!r} but this log is {origin!r}"
                )
        else:
            signer = NoteSigner.generate(origin)
            if not create_secret_file(self.key_path, signer.to_private_string() + "\n"):
                # Another process created the key first: use theirs.
                return self.load_or_create(origin)
        self._trust(signer.verifier)
        return signer

    def _trust(self, verifier: NoteVerifier) -> None:
        known = read_vkeys(self.trusted_path)
        if verifier not in known:
            lines = [str(v) for v in (*known, verifier)]
            write_secret_file(self.trusted_path, "\n".join(lines) + "\n")

    def rotate(self, origin: str) -> NoteSigner:
        """A new signing key for the same log; the old public key stays trusted."""
        signer = NoteSigner.generate(origin)
        self._trust(signer.verifier)
        write_secret_file(self.key_path, signer.to_private_string() + "\n")
        return signer

    def trusted(self) -> list[NoteVerifier]:
        return read_vkeys(self.trusted_path)

    def witnesses(self) -> list[NoteVerifier]:
        return [w for w in read_vkeys(self.witnesses_path) if w.alg == ALG_COSIGNATURE_V1]

    def add_witness(self, vkey: str) -> NoteVerifier:
        verifier = NoteVerifier.parse(vkey)
        if verifier.alg != ALG_COSIGNATURE_V1:
            raise KeyFileError("a witness key must be a cosignature (type 0x04) verifier key")
        known = read_vkeys(self.witnesses_path)
        if verifier not in known:
            lines = [str(v) for v in (*known, verifier)]
            write_secret_file(self.witnesses_path, "\n".join(lines) + "\n")
        return verifier
