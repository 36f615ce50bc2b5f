"""Test helpers: tiny GGUF headers, a scripted OpenAI-style HTTP server, a real llama.cpp server."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _gguf_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def write_gguf_header(
    path: Path,
    *,
    context_length: int = 2048,
    file_type: int = 15,
    tokens: tuple[str, ...] = ("<pad>", "a", "b"),
    extra: bytes = b"",
) -> Path:
    """A GGUF file with a valid header and no tensors: enough for the registry, not for llama.cpp."""
    kvs = [
        _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama"),
        _gguf_string("general.name") + struct.pack("<I", 8) + _gguf_string("tiny"),
        _gguf_string("llama.context_length") + struct.pack("<II", 4, context_length),
        _gguf_string("general.file_type") + struct.pack("<II", 4, file_type),
        _gguf_string("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, len(tokens))
        + b"".join(_gguf_string(t) for t in tokens),
        _gguf_string("tokenizer.ggml.scores")
        + struct.pack("<IIQ", 9, 6, len(tokens))
        + b"".join(struct.pack("<f", 0.0) for _ in tokens),
    ]
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)
    path.write_bytes(header + extra)
    return path


def with_string_kv(src: Path, dst: Path, key: str, value: str, *, head_mb: int = 32) -> Path:
    """Copy a real GGUF, adding one string key/value to its header (tensor data re-aligned).

    Tensor offsets are relative to the data section, so only the padding before it changes.
    """
    with src.open("rb") as fh:
        head = fh.read(head_mb << 20)
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from(fmt, head, pos)
        pos += struct.calcsize(fmt)
        return value[0]

    def skip_string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return head[pos - n : pos].decode("utf-8", "replace")

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    assert head[:4] == b"GGUF"
    pos = 4
    version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    kv_start = pos
    alignment = 32
    for _ in range(n_kv):
        name = skip_string()
        kind = take("<I")
        if kind == 8:
            skip_string()
        elif kind == 9:
            item, count = take("<I"), take("<Q")
            if item == 8:
                for _ in range(count):
                    skip_string()
            else:
                pos += sizes[item] * count
        else:
            if name == "general.alignment":
                alignment = struct.unpack_from("<I", head, pos)[0]
            pos += sizes[kind]
    kv_end = pos
    for _ in range(n_tensors):
        skip_string()
        n_dims = take("<I")
        pos += 8 * n_dims + 4 + 8
    infos_end = pos
    data_start = -(-infos_end // alignment) * alignment
    new_kv = _gguf_string(key) + struct.pack("<I", 8) + _gguf_string(value)
    header = (
        b"GGUF"
        + struct.pack("<IQQ", version, n_tensors, n_kv + 1)
        + head[kv_start:kv_end]
        + new_kv
        + head[kv_end:infos_end]
    )
    header += b"\0" * (-len(header) % alignment)
    with src.open("rb") as fh, dst.open("wb") as out:
        out.write(header)
        fh.seek(data_start)
        while block := fh.read(8 << 20):
            out.write(block)
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a scripted HTTP server: real sockets, replies chosen by the test --------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict → JSON; str/bytes → sent as is
    headers: dict[str, str] = field(default_factory=dict)
    sse: list[str] | None = None  # each item sent as one `data: ...` event
    delay_s: float = 0.0


def chat_json(text: str, *, usage: tuple[int, int] | None = (7, 3)) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }
    if usage:
        out["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return out


def chunk_json(text: str | None, finish: str | None = None) -> str:
    delta = {} if text is None else {"content": text}
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


class ScriptedServer:
    """Answers POSTs with `replies` in order (the last one repeats), or with what `respond`
    makes of each request when set; records every request."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.respond: Callable[[dict[str, Any]], Reply] | None = None
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                owner.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(raw)}
                )
                n = len(owner.requests) - 1
                reply = owner.replies[min(n, len(owner.replies) - 1)]
                if owner.respond is not None:
                    reply = owner.respond(owner.requests[-1]["json"])
                time.sleep(reply.delay_s)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(reply)

            def _send(self, reply: Reply) -> None:
                if reply.sse is not None:
                    payload = "".join(f"data: {e}\n\n" for e in reply.sse).encode()
                    ctype = "text/event-stream"
                elif isinstance(reply.body, dict):
                    payload, ctype = json.dumps(reply.body).encode(), "application/json"
                else:
                    body = reply.body if reply.body is not None else ""
                    payload = body.encode() if isinstance(body, str) else body
                    ctype = "application/json"
                self.send_response(reply.status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the real llama.cpp OpenAI-compatible server -----------------------------------------------


@contextlib.contextmanager
def llama_server(model: Path, log: Path, *, startup_s: float = 120.0) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free loopback port; always terminated on exit."""
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        # The server loads through the same AMX guard as sovra's own llama.cpp generator.
        "import runpy; from sovra.models.llamacpp import amx_advertised, llama_extra_buffers\n"
        "with llama_extra_buffers(not amx_advertised()):\n"
        "    runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)",
        "--model",
        str(model),
        "--model_alias",
        "gemma",
        # This GGUF carries no chat template; without this the server falls back to the llama-2
        # format and the base model answers with an immediate end-of-sequence.
        "--chat_format",
        "gemma",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        # One thread: on a busy CI host two llama.cpp threads stall each other at every layer.
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(base + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready after {startup_s:.0f} s")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
