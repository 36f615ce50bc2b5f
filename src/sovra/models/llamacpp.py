"""Embedded generation with llama.cpp: any local GGUF model, in-process, no server and no network.

`llama_cpp` is imported only when a model is loaded, so the registry and the CLI work (and start
fast) on a machine where llama-cpp-python is not installed. The GGUF header is read here with a
small pure-Python parser: it validates a file before llama.cpp touches it (a clear error instead of
a native crash message) and gives the registry the context length and quantisation without loading
the weights.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sovra.models.base import ModelError, ModelUnavailable
from sovra.models.generation import (
    BadGenerationRequest,
    GenerationError,
    GenerationStats,
    Message,
    StreamedGeneration,
    timed_pieces,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

GGUF_MAGIC = b"GGUF"
# Used when neither the caller nor the registry names a context length: enough for a prompt with
# several sources plus an answer, small enough that the KV cache stays modest on a laptop.
DEFAULT_CONTEXT_LENGTH = 4096

# llama.cpp's `general.file_type` (enum llama_ftype) → the usual quantisation name.
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
}

# GGUF value types: struct format of the fixed-size ones; 8 = string, 9 = array.
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")

# A transcript format for GGUF files that carry no chat template of a family we know. Base models
# continue text, so a plain "Role: text" transcript is the most natural prompt for them.
_FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# Gemma's turn format (as in Google's tokenizer_config.json for Gemma 2/3), for Gemma GGUFs
# converted without `tokenizer.chat_template` — the packaged 270M file is one. The system text
# goes into the first user turn (Gemma has no system role); turns must alternate.
_GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
_BUILTIN_TEMPLATES = {
    "gemma": _GEMMA_TEMPLATE,
    "gemma2": _GEMMA_TEMPLATE,
    "gemma3": _GEMMA_TEMPLATE,
}


def chat_template(meta: dict[str, Any]) -> tuple[str, str]:
    """(Jinja template, where it came from): the GGUF's own `tokenizer.chat_template`, else the
    known format of its architecture (`builtin:<arch>`), else a plain transcript."""
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        return template, "gguf"
    arch = meta.get("general.architecture")
    if isinstance(arch, str) and arch in _BUILTIN_TEMPLATES:
        return _BUILTIN_TEMPLATES[arch], f"builtin:{arch}"
    return _FALLBACK_TEMPLATE, "transcript"


def resolve_gguf(path: Path) -> Path:
    """The `.gguf` file itself, or the single `.gguf` inside a directory; ModelError otherwise."""
    path = path.expanduser()
    if not path.exists():
        raise ModelError(
            f"model file {path} does not exist; check the path (or `sovra model list`)"
        )
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
        if not found:
            raise ModelError(f"model directory {path} holds no .gguf file")
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ModelError(
                f"model directory {path} holds {len(found)} .gguf files ({names}); "
                "point at one file (split GGUFs: the first part, *-00001-of-*.gguf)"
            )
        return found[0]
    return path


class _Reader:
    """Bounds-checked little-endian reads over a memory-mapped GGUF header."""

    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.data):
            raise ModelError(f"{self.path} is truncated or corrupt (GGUF header ends early)")
        self.pos += n
        return start

    def unpack(self, fmt: str) -> Any:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.data, start)[0]

    def string(self) -> str:
        n = int(self.unpack("<Q"))
        start = self.take(n)
        try:
            return bytes(self.data[start : start + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{self.path} is corrupt (a GGUF string is not UTF-8)") from None

    def skip_string(self) -> None:
        self.take(int(self.unpack("<Q")))

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = int(self.unpack("<I")), int(self.unpack("<Q"))
            if item in _SCALARS:
                self.take(struct.calcsize(_SCALARS[item]) * count)
            elif item == _STRING:
                # Vocabularies are arrays of ~10^5 strings: skip them (callers need scalars only)
                # in a tight loop; one bounds check at the end covers every length read.
                pos, size, length = self.pos, len(self.data), _U64.unpack_from
                for _ in range(count):
                    if pos + 8 > size:
                        pos = size + 1
                        break
                    pos += 8 + length(self.data, pos)[0]
                self.take(pos - self.pos)  # raises "truncated" when past the end
            else:
                raise ModelError(f"{self.path} is corrupt (GGUF array of unknown type {item})")
            return None
        raise ModelError(f"{self.path} is corrupt (GGUF value of unknown type {kind})")


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The scalar key/values of a GGUF header (arrays are skipped); ModelError if it is not GGUF."""
    path = resolve_gguf(path)
    try:
        with path.open("rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise ModelError(
                    f"{path} is not a GGUF model file (bad magic bytes); "
                    "convert the model to GGUF or check that the download finished"
                )
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                reader = _Reader(data, path)
                reader.take(4)
                version = int(reader.unpack("<I"))
                if version not in (2, 3):
                    raise ModelError(
                        f"{path}: unsupported GGUF version {version} (expected 2 or 3; "
                        "big-endian or very old files need re-conversion)"
                    )
                reader.unpack("<Q")  # tensor count
                kv_count = int(reader.unpack("<Q"))
                meta: dict[str, Any] = {}
                for _ in range(kv_count):
                    key = reader.string()
                    meta[key] = reader.value(int(reader.unpack("<I")))
                return meta
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def gguf_context_length(meta: dict[str, Any]) -> int | None:
    """The context length the model was trained for (`<arch>.context_length`)."""
    arch = meta.get("general.architecture")
    value = meta.get(f"{arch}.context_length") if isinstance(arch, str) else None
    return int(value) if isinstance(value, int) and value > 0 else None


def gguf_quantisation(meta: dict[str, Any]) -> str | None:
    value = meta.get("general.file_type")
    return _FILE_TYPES.get(value) if isinstance(value, int) else None


def default_threads() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_PARAMS_LOCK = threading.Lock()


def amx_advertised(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises Intel AMX tiles.

    llama.cpp's CPU build picks its AMX matrix kernels on such a CPU, and in virtual machines
    that advertise AMX without granting the tile state those kernels crash the process
    (SIGSEGV in ggml_backend_amx_mul_mat, seen on this project's Xeon VMs). Weights then stay
    in llama.cpp's plain buffers: slower on bare-metal Sapphire Rapids, never a crash.
    """
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return any(
        line.startswith("flags") and "amx_tile" in line.split() for line in text.splitlines()
    )


@contextlib.contextmanager
def llama_extra_buffers(enabled: bool) -> Iterator[None]:
    """Load with llama.cpp's extra buffer types (repacked / AMX weights) on or off.

    llama-cpp-python does not expose `use_extra_bufts`; it reads the defaults from
    `llama_model_default_params` while constructing, so that function is wrapped for the
    duration of one load (under a lock: other threads may load models at the same time).
    """
    if enabled:
        yield
        return
    # The ctypes bindings module, as `llama_cpp.llama` sees it (it ships no type information).
    bindings: Any = importlib.import_module("llama_cpp.llama").llama_cpp

    with _PARAMS_LOCK:
        original = bindings.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            bindings.llama_model_default_params = original


class LlamaCppGenerator:
    """A GGUF model run in-process by llama.cpp, prompted with the GGUF's own chat template
    (see `chat_template` for files that lack one).

    Loads eagerly, so a missing or corrupt file fails at construction with its name in the error.
    One generation at a time per instance (llama.cpp contexts are not thread-safe); a lock
    serialises concurrent callers. The KV cache keeps the previous prompt, so a second question
    with the same system prompt and sources skips re-reading the shared prefix.
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str | None = None,
        context_length: int | None = None,
        threads: int | None = None,
        instruction_tuned: bool = True,
        batch_size: int = 512,
    ) -> None:
        self._path = resolve_gguf(Path(path))
        self._meta = read_gguf_metadata(self._path)
        self._name = name or self._path.stem
        self._instruction_tuned = instruction_tuned
        self._threads = threads or default_threads()
        trained = gguf_context_length(self._meta)
        wanted = context_length or DEFAULT_CONTEXT_LENGTH
        # Never ask for more than the model was trained on: beyond it quality collapses.
        n_ctx = min(wanted, trained) if trained else wanted
        try:
            from llama_cpp import Llama, llama_chat_format
        except ImportError:
            raise ModelUnavailable(
                "llama-cpp-python is not installed; run `make install` "
                "(or `pip install llama-cpp-python`) to use local GGUF models"
            ) from None
        self.load_s = 0.0
        started = time.perf_counter()
        try:
            with llama_extra_buffers(not amx_advertised()):
                self._llm: Llama = Llama(
                    model_path=str(self._path),
                    n_ctx=n_ctx,
                    n_threads=self._threads,
                    n_threads_batch=self._threads,
                    n_batch=batch_size,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BadGenerationRequest(
                f"llama.cpp cannot load model file {self._path}: {exc}; "
                "the file may be truncated, corrupt, or of an architecture this llama.cpp "
                "build does not know"
            ) from None
        self.load_s = time.perf_counter() - started
        template, self._template_source = chat_template(self._meta)
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self._piece(eos) if eos >= 0 else "",
            bos_token=self._piece(bos) if bos >= 0 else "",
        )
        import llama_cpp

        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._lock = threading.Lock()
        self._owner: int | None = None

    def _piece(self, token: int) -> str:
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    @property
    def model_id(self) -> str:
        return self._name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def metadata(self) -> dict[str, Any]:
        """Scalar GGUF header fields (architecture, name, context length, chat template, ...)."""
        return dict(self._meta)

    @property
    def chat_template_source(self) -> str:
        """`gguf` (the file's own template), `builtin:<arch>` (a GGUF converted without one, of a
        family whose format is known) or `transcript` (plain "Role: text" lines)."""
        return self._template_source

    @property
    def context_length(self) -> int:
        return int(self._llm.n_ctx())

    @property
    def instruction_tuned(self) -> bool:
        return self._instruction_tuned

    @property
    def threads(self) -> int:
        return self._threads

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as document text (no BOS, special-token spellings not parsed)."""
        # Tokenising reads only the vocabulary, not the KV cache: safe beside a running generation.
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The exact prompt text the model sees: the chat template applied to `messages`."""
        for i, m in enumerate(messages):
            if m.get("role") not in ("system", "user", "assistant") or not isinstance(
                m.get("content"), str
            ):
                raise BadGenerationRequest(
                    f"message {i} must have role system|user|assistant and text content"
                )
        try:
            return self._formatter(messages=list(messages)).prompt  # type: ignore[arg-type]
        except Exception as exc:  # jinja2 raises its own types and the template's ValueError
            raise BadGenerationRequest(
                f"the chat template of {self._name} ({self._path.name}) rejected the messages: "
                f"{exc}"
            ) from None

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        prompt = self.render_prompt(messages)
        # The template writes BOS itself when the model wants one; special=True turns the
        # template's control spellings (<start_of_turn>, <|im_start|>, ...) into their tokens.
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> StreamedGeneration:
        if max_tokens < 1:
            raise BadGenerationRequest(f"max_tokens must be at least 1, got {max_tokens}")
        tokens = self.prompt_tokens(messages)
        budget = self.context_length - len(tokens)
        if budget < 1:
            raise BadGenerationRequest(
                f"the prompt is {len(tokens)} tokens but {self._name} accepts "
                f"{self.context_length} tokens in all; send fewer or shorter sources"
            )
        stats = GenerationStats(model=self._name, tokens_in=len(tokens))
        pieces = self._run(tokens, min(max_tokens, budget), temperature, stop, stats)
        return StreamedGeneration(pieces, stats)

    def _run(
        self,
        tokens: list[int],
        limit: int,
        temperature: float,
        stop: Sequence[str],
        stats: GenerationStats,
    ) -> Iterator[str]:
        # Runs lazily, when the caller starts reading; the clock starts once the model is ours.
        if self._owner == threading.get_ident():
            # Same thread, previous answer still open: waiting on the lock would deadlock.
            raise GenerationError(
                f"{self._name} is still streaming an earlier answer in this thread; "
                "read it to the end or close it first"
            )
        with self._lock:
            self._owner = threading.get_ident()
            try:
                yield from timed_pieces(
                    self._decode(tokens, limit, temperature, stats), stats, stop
                )
            finally:
                self._owner = None

    def _decode(
        self, tokens: list[int], limit: int, temperature: float, stats: GenerationStats
    ) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        finish = "length"
        try:
            for token in self._llm.generate(tokens, temp=temperature, reset=True):
                if self._is_eog(self._vocab, token):
                    finish = "stop"
                    break
                stats.tokens_out += 1
                # Bytes, not text: one UTF-8 character may span two tokens.
                yield decoder.decode(self._llm.detokenize([token]))
                if stats.tokens_out >= limit:  # max_tokens, or the end of the context window
                    break
            yield decoder.decode(b"", final=True)
            stats.finish_reason = finish
        except (RuntimeError, ValueError) as exc:
            raise GenerationError(
                f"llama.cpp failed while generating with {self._name}: {exc}"
            ) from None

    def reset(self) -> None:
        """Forget the cached prompt so the next call evaluates it from scratch (benchmarks)."""
        with self._lock:
            self._llm.reset()  # type: ignore[no-untyped-call]  # unannotated upstream

    def close(self) -> None:
        """Free the model's memory now instead of at garbage collection."""
        self._llm.close()

    def __repr__(self) -> str:
        return f"LlamaCppGenerator({self._name!r}, path={str(self._path)!r})"
