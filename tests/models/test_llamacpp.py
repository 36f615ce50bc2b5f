"""LlamaCppGenerator with the real packaged Gemma 3 270M GGUF (a base model: these tests check the
machinery — template, streaming, stops, counting, limits, errors — not answer quality)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sovra.models.base import ModelError
from sovra.models.generation import GenerationError, Generator, StopFilter
from sovra.models.llamacpp import (
    LlamaCppGenerator,
    amx_advertised,
    default_threads,
    resolve_gguf,
)
from sovra.models.openai_compat import estimate_tokens
from tests.support.models import with_string_kv

MSGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "List three colours of the rainbow."},
]


def complete(gen: LlamaCppGenerator, msgs: list[dict[str, str]] = MSGS, **kw: object) -> str:
    return "".join(gen.stream(msgs, **kw))  # type: ignore[arg-type]


def test_protocol_and_chat_template(gemma: LlamaCppGenerator) -> None:
    assert isinstance(gemma, Generator)
    assert gemma.metadata["general.architecture"] == "gemma3"
    # This GGUF was converted without `tokenizer.chat_template`: Gemma's known format is used.
    assert "tokenizer.chat_template" not in gemma.metadata
    assert gemma.chat_template_source == "builtin:gemma3"
    prompt = gemma.render_prompt(MSGS)
    # Gemma's turns, system text folded into the first user turn, BOS written by the template.
    assert prompt.startswith("<bos>")
    assert "<start_of_turn>user\nYou are terse." in prompt
    assert "List three colours of the rainbow.<end_of_turn>" in prompt
    assert prompt.endswith("<start_of_turn>model\n")
    tokens = gemma.prompt_tokens(MSGS)
    assert tokens[0] == 2 and tokens.count(2) == 1  # BOS once, not doubled
    assert len(tokens) < len(prompt) // 2  # control spellings became single tokens


def test_the_ggufs_own_template_wins(gguf: Path, tmp_path: Path) -> None:
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    path = with_string_kv(gguf, tmp_path / "chatml.gguf", "tokenizer.chat_template", chatml)
    gen = LlamaCppGenerator(path, threads=1, context_length=512)
    try:
        assert gen.chat_template_source == "gguf"
        assert gen.render_prompt(MSGS) == (
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nList three colours of the rainbow.<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        generation = gen.stream(MSGS, max_tokens=2)
        "".join(generation)  # the re-written file is a loadable, working model
        assert generation.stats.tokens_out > 0
    finally:
        gen.close()


def test_streaming_stats_and_determinism(gemma: LlamaCppGenerator) -> None:
    generation = gemma.stream(MSGS, max_tokens=12)
    pieces = list(generation)
    text = "".join(pieces)
    assert len(pieces) > 1 and text.strip()
    s = generation.stats
    assert s.model == "gemma3-270m-base"
    assert s.tokens_in == len(gemma.prompt_tokens(MSGS))
    assert 0 < s.tokens_out <= 12 and s.finish_reason in ("stop", "length")
    assert s.first_token_s is not None and 0 < s.first_token_s <= s.total_s
    assert s.tokens_per_s >= 0
    assert complete(gemma, max_tokens=12) == text  # greedy, prompt prefix reused from the cache
    gemma.reset()
    assert complete(gemma, max_tokens=12) == text  # greedy, prompt read from scratch


def test_max_tokens_is_exact(gemma: LlamaCppGenerator) -> None:
    msgs = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    generation = gemma.stream(msgs, max_tokens=5)
    text = "".join(generation)
    assert generation.stats.tokens_out == 5 and generation.stats.finish_reason == "length"
    assert gemma.count_tokens(text) <= 6


def test_stop_sequences(gemma: LlamaCppGenerator) -> None:
    msgs = [{"role": "user", "content": "Count from one to twenty in words, separated by commas."}]
    gemma.reset()
    full = complete(gemma, msgs, max_tokens=16)
    words = full.split()
    assert len(words) >= 4, full
    stop = words[len(words) // 2]
    gemma.reset()  # same evaluation path as the first run: identical greedy tokens
    generation = gemma.stream(msgs, max_tokens=16, stop=["@@never@@", stop])
    cut = "".join(generation)
    assert cut == full[: full.index(stop)]
    assert generation.stats.finish_reason == "stop" and stop not in cut


def test_stop_filter_holds_back_partial_matches() -> None:
    f = StopFilter(["</answer>", "\n\n"])
    out = [f.feed(p) for p in ["Hello </", "ans", "wer> tail"]]
    assert out == ["Hello ", "", ""] and f.stopped
    g = StopFilter(["END"])
    assert g.feed("abcE") == "abc" and g.feed("Nx") == "ENx" and not g.stopped
    assert g.feed("E") == "" and g.flush() == "E"


def test_count_tokens_and_estimate_is_conservative(gemma: LlamaCppGenerator) -> None:
    assert gemma.count_tokens("") == 0
    assert gemma.count_tokens("hello") == 1
    # Special-token spellings inside a document are text, not control tokens.
    assert gemma.count_tokens("<end_of_turn>") > 1
    samples = [
        "The etcd database quota is low; defragment the members and compact the history.",
        "Die Datenbank ist fast voll. Bitte defragmentieren Sie die Mitglieder des Clusters.",
        "La base de datos está casi llena; compacte el historial y desfragmente los miembros.",
        "数据主权意味着数据在本地处理。",
        "def f(x: int) -> int:\n    return {'a': [x ** 2 for _ in range(3)]}",
    ]
    for text in samples:
        assert estimate_tokens(text) >= gemma.count_tokens(text), text


def test_context_overflow_is_refused_before_generating(gemma: LlamaCppGenerator) -> None:
    huge = [{"role": "user", "content": "word " * 1000}]
    with pytest.raises(GenerationError, match=r"prompt is \d+ tokens but .* accepts 512"):
        gemma.stream(huge)
    # A prompt that fits but leaves little room: generation stops at the window's end.
    for words in range(gemma.context_length, 0, -4):
        fits = [{"role": "user", "content": "word " * words}]
        room = gemma.context_length - len(gemma.prompt_tokens(fits))
        if room >= 5:
            break
    assert 5 <= room < 40
    generation = gemma.stream(fits, max_tokens=500)
    "".join(generation)
    assert generation.stats.tokens_out <= room


def test_invalid_messages(gemma: LlamaCppGenerator) -> None:
    with pytest.raises(GenerationError, match=r"role system\|user\|assistant"):
        gemma.stream([{"role": "tool", "content": "x"}])
    with pytest.raises(GenerationError, match="chat template of gemma3-270m-base"):
        # Gemma's template requires alternating user/model turns.
        gemma.stream([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(GenerationError, match="max_tokens"):
        gemma.stream(MSGS, max_tokens=0)


def test_one_stream_at_a_time_per_thread(gemma: LlamaCppGenerator) -> None:
    first = gemma.stream(MSGS, max_tokens=20)
    it = iter(first)
    next(it)
    with pytest.raises(GenerationError, match="still streaming"):
        "".join(gemma.stream(MSGS, max_tokens=2))
    first.close()
    assert complete(gemma, max_tokens=2)


def test_path_forms_and_errors(gguf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "model.gguf").symlink_to(gguf)
    assert resolve_gguf(folder) == folder / "model.gguf"
    (folder / "other.gguf").symlink_to(gguf)
    with pytest.raises(ModelError, match=r"holds 2 \.gguf files") as err:
        LlamaCppGenerator(folder)
    assert str(folder) in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"holds no \.gguf file"):
        LlamaCppGenerator(empty)
    missing = tmp_path / "missing.gguf"
    with pytest.raises(ModelError, match="does not exist") as err:
        LlamaCppGenerator(missing)
    assert str(missing) in str(err.value)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"\x00" * 4096)
    with pytest.raises(ModelError, match="not a GGUF model file") as err:
        LlamaCppGenerator(garbage)
    assert str(garbage) in str(err.value)


def test_truncated_model_names_the_file(gguf: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with gguf.open("rb") as src, truncated.open("wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
        dst.truncate(gguf.stat().st_size // 2)
    # The header is intact, the tensors are not: llama.cpp itself must refuse it.
    with pytest.raises(GenerationError, match="cannot load model file") as err:
        LlamaCppGenerator(truncated, threads=1)
    assert str(truncated) in str(err.value)


def test_defaults(gguf: Path) -> None:
    assert default_threads() >= 1
    gen = LlamaCppGenerator(gguf, context_length=100_000, threads=1)
    try:
        # Capped by what the model was trained for (Gemma 3 270M: 32768).
        assert gen.context_length == 32768 and gen.model_id == gguf.stem and gen.threads == 1
        assert gen.instruction_tuned is True  # no registry entry: the caller's default
        assert str(gguf) in repr(gen)
    finally:
        gen.close()


def test_amx_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    with_amx = tmp_path / "amx"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n")
    without = tmp_path / "plain"
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\nbugs\t\t: amx_tile\n")
    assert amx_advertised(with_amx)
    assert not amx_advertised(without)
    assert not amx_advertised(tmp_path / "missing")
