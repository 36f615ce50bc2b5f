"""OpenAICompatibleGenerator against real HTTP servers on loopback: a scripted stdlib server for
error paths (429/500/malformed/slow), and `llama_cpp.server` with the Gemma GGUF for the real thing."""

from __future__ import annotations

import json
import socket

import pytest

from sovra.models.generation import GenerationError, Generator
from sovra.models.openai_compat import OpenAICompatibleGenerator, estimate_tokens
from tests.support.models import Reply, ScriptedServer, chat_json, chunk_json, free_port

MSGS = [{"role": "user", "content": "Say hello."}]


def gen(url: str, **kw: object) -> OpenAICompatibleGenerator:
    kw.setdefault("name", "test-ep")
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout_s", 10.0)
    return OpenAICompatibleGenerator(url, "m", **kw)  # type: ignore[arg-type]


def run(g: OpenAICompatibleGenerator, **kw: object) -> tuple[str, object]:
    generation = g.stream(MSGS, **kw)  # type: ignore[arg-type]
    return "".join(generation), generation.stats


# -- scripted server: the paths a real server rarely shows on demand -------------------------


def test_streaming_pieces_usage_and_protocol() -> None:
    events = [chunk_json("Hel"), chunk_json("lo"), chunk_json(" there"), chunk_json(None, "stop")]
    events.append(
        json.dumps(
            {
                **json.loads(chunk_json(None)),
                "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
            }
        )
    )
    events.append("[DONE]")
    with ScriptedServer([Reply(sse=events)]) as srv:
        g = gen(srv.url)
        assert isinstance(g, Generator)
        generation = g.stream(MSGS, max_tokens=20, stop=["zzz"])
        pieces = list(generation)
        assert pieces == ["Hel", "lo", " there"]
        stats = generation.stats
        assert (stats.tokens_in, stats.tokens_out, stats.finish_reason) == (11, 3, "stop")
        assert stats.first_token_s is not None and stats.first_token_s <= stats.total_s
        sent = srv.requests[0]["json"]
        assert sent["stream"] is True and sent["max_tokens"] == 20 and sent["stop"] == ["zzz"]
        assert sent["messages"] == MSGS and srv.requests[0]["path"] == "/v1/chat/completions"


def test_stop_sequence_enforced_across_chunks_when_server_ignores_it() -> None:
    events = [chunk_json("Hel"), chunk_json("lo ST"), chunk_json("OP world"), "[DONE]"]
    with ScriptedServer([Reply(sse=events)]) as srv:
        text, stats = run(gen(srv.url), stop=["STOP"])
    assert text == "Hello "
    assert stats.finish_reason == "stop"  # type: ignore[attr-defined]


def test_non_streaming_mode() -> None:
    with ScriptedServer([Reply(body=chat_json("Hi there. END more"))]) as srv:
        text, stats = run(gen(srv.url, streaming=False), stop=["END"])
        assert srv.requests[0]["json"]["stream"] is False
    assert text == "Hi there. "
    assert stats.tokens_in == 7 and stats.tokens_out == 3  # type: ignore[attr-defined]


def test_429_and_503_are_retried_with_backoff_then_succeed() -> None:
    replies = [
        Reply(status=429, body={"error": {"message": "slow down"}}),  # client backoff (0.5 s)
        Reply(status=503, body={"error": {"message": "busy"}}, headers={"retry-after-ms": "20"}),
        Reply(body=chat_json("ok")),
    ]
    with ScriptedServer(replies) as srv:
        text, _ = run(gen(srv.url, max_retries=2, streaming=False))
        assert text == "ok"
        assert len(srv.requests) == 3
        retry_counts = [r["headers"].get("x-stainless-retry-count") for r in srv.requests]
        assert retry_counts == ["0", "1", "2"]


def test_500_after_retries_is_a_clear_error() -> None:
    with ScriptedServer([Reply(status=500, body={"error": {"message": "kaboom"}})]) as srv:
        with pytest.raises(GenerationError) as err:
            run(gen(srv.url, max_retries=1))
        assert len(srv.requests) == 2
    msg = str(err.value)
    assert "test-ep" in msg and srv.url in msg and "HTTP 500" in msg and "kaboom" in msg


def test_429_exhausted() -> None:
    reply = Reply(status=429, body={"error": {"message": "quota"}}, headers={"retry-after-ms": "1"})
    with ScriptedServer([reply]) as srv:
        with pytest.raises(GenerationError, match=r"rate limiting \(HTTP 429\).*quota"):
            run(gen(srv.url, max_retries=2))
        assert len(srv.requests) == 3


def test_400_is_not_retried() -> None:
    with ScriptedServer([Reply(status=400, body={"error": {"message": "bad model"}})]) as srv:
        with pytest.raises(GenerationError, match="HTTP 400: bad model"):
            run(gen(srv.url, max_retries=3))
        assert len(srv.requests) == 1


@pytest.mark.parametrize(
    ("reply", "streaming"),
    [
        (Reply(body="{not json"), False),
        (Reply(body={"id": "x", "object": "chat.completion"}), False),  # no choices
        (Reply(body={"choices": []}), False),
        (Reply(sse=["{not json"]), True),
        (Reply(sse=[json.dumps({"id": "x", "object": "chat.completion.chunk"}), "[DONE]"]), True),
        (Reply(sse=["[DONE]"]), True),  # an empty stream
        (Reply(sse=[json.dumps({"choices": [{"index": 0, "delta": {"content": 5}}]})]), True),
    ],
)
def test_malformed_responses_are_clear_errors(reply: Reply, streaming: bool) -> None:
    with ScriptedServer([reply]) as srv, pytest.raises(GenerationError) as err:
        run(gen(srv.url, streaming=streaming))
    assert "malformed" in str(err.value) and "test-ep" in str(err.value)


def test_error_event_inside_stream() -> None:
    events = [chunk_json("a"), json.dumps({"error": {"message": "model crashed"}})]
    with ScriptedServer([Reply(sse=events)]) as srv, pytest.raises(GenerationError) as err:
        run(gen(srv.url))
    assert "model crashed" in str(err.value)


def test_timeout() -> None:
    slow = Reply(body=chat_json("late"), delay_s=3)
    expected = r"did not answer within 0.3 s \(timeout\)"
    with ScriptedServer([slow]) as srv, pytest.raises(GenerationError, match=expected):
        run(gen(srv.url, timeout_s=0.3, streaming=False))


def test_server_down_is_unreachable() -> None:
    port = free_port()  # bound then closed: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(GenerationError) as err:
        run(gen(url, name="down"))
    assert f"endpoint down at {url} is unreachable" in str(err.value)


def test_credentials_come_only_from_the_named_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-very-secret-1234"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-openai-key")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-ambient")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "X-Leak: yes")
    monkeypatch.setenv("SOVRA_TEST_KEY", secret)
    replies = [Reply(body=chat_json("a")), Reply(status=401, body={"error": {"message": "nope"}})]
    with ScriptedServer(replies) as srv:
        run(gen(srv.url, streaming=False))  # no api_key_env: no credential at all
        keyed = gen(srv.url, api_key_env="SOVRA_TEST_KEY", streaming=False)
        with pytest.raises(GenerationError) as err:
            run(keyed)
        first, second = (r["headers"] for r in srv.requests)
    lower = [{k.lower(): v for k, v in h.items()} for h in (first, second)]
    assert lower[0]["authorization"] == "Bearer sovra-no-key"
    assert lower[1]["authorization"] == f"Bearer {secret}"
    for h in lower:
        assert "openai-organization" not in h and "x-leak" not in h
        assert "sk-ambient-openai-key" not in json.dumps(h)
    assert "rejected the API key" in str(err.value) and "nope" in str(err.value)
    assert secret not in str(err.value) and secret not in repr(keyed)
    assert secret not in json.dumps(vars(keyed), default=repr).replace(repr(keyed._client), "")


def test_missing_env_var_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOVRA_MISSING_KEY", raising=False)
    with pytest.raises(GenerationError, match="environment variable SOVRA_MISSING_KEY"):
        OpenAICompatibleGenerator("http://127.0.0.1:1/v1", "m", api_key_env="SOVRA_MISSING_KEY")


def test_bad_base_url_and_credentials_in_url_are_not_echoed() -> None:
    with pytest.raises(GenerationError, match="must start with http"):
        OpenAICompatibleGenerator("127.0.0.1:8000", "m")
    port = free_port()
    g = OpenAICompatibleGenerator(f"http://user:pw@127.0.0.1:{port}/v1", "m", max_retries=0)
    with pytest.raises(GenerationError) as err:
        run(g)
    assert "pw" not in str(err.value) and f"127.0.0.1:{port}" in str(err.value)


def test_from_endpoint_config() -> None:
    from sovra.config import EndpointConfig

    ep = EndpointConfig(
        name="local-vllm",
        kind="openai",
        model="qwen",
        base_url="http://127.0.0.1:9/v1",
        context_length=8192,
        instruction_tuned=True,
        timeout_s=5,
        max_retries=0,
    )
    g = OpenAICompatibleGenerator.from_endpoint(ep)
    assert (g.model_id, g.endpoint_name, g.context_length, g.instruction_tuned) == (
        "qwen",
        "local-vllm",
        8192,
        True,
    )
    assert g.base_url == "http://127.0.0.1:9/v1"


def test_estimate_is_conservative_and_tokenizer_hook() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("one two three four five") >= 5
    assert estimate_tokens("数据主权") == 4
    g = OpenAICompatibleGenerator("http://127.0.0.1:9/v1", "m", tokenizer=lambda t: 42)
    assert g.count_tokens("anything") == 42 and g.exact_token_counts
    assert not gen("http://127.0.0.1:9/v1").exact_token_counts


def test_closing_a_stream_early() -> None:
    events = [chunk_json(str(i)) for i in range(50)] + ["[DONE]"]
    with ScriptedServer([Reply(sse=events)]) as srv:
        generation = gen(srv.url).stream(MSGS)
        it = iter(generation)
        assert next(it) == "0"
        generation.close()
        assert list(it) == []


# -- the real llama.cpp server with the Gemma GGUF ------------------------------------------


def test_real_server_streaming_matches_non_streaming(llama_server_url: str) -> None:
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    streaming = gen(llama_server_url, timeout_s=120, max_retries=0)
    plain = gen(llama_server_url, timeout_s=120, max_retries=0, streaming=False)
    generation = streaming.stream(msgs, max_tokens=12)
    pieces = list(generation)
    whole = plain.stream(msgs, max_tokens=12)
    text = "".join(whole)
    assert len(pieces) > 1 and "".join(pieces) == text and text.strip()
    for stats in (generation.stats, whole.stats):
        assert stats.tokens_in > 5 and 0 < stats.tokens_out <= 12
        assert stats.finish_reason in ("stop", "length")
    # llama_cpp.server sends no usage when streaming: the conservative estimate stands in for it
    # and must not be below the server's own count of the same prompt.
    assert generation.stats.tokens_in >= whole.stats.tokens_in


def test_real_server_stop_sequence(llama_server_url: str) -> None:
    msgs = [{"role": "user", "content": "Count from one to twenty in words."}]
    g = gen(llama_server_url, timeout_s=120)
    full = "".join(g.stream(msgs, max_tokens=16))
    words = full.split()
    assert len(words) >= 4, full
    stop = words[len(words) // 2]
    cut = "".join(g.stream(msgs, max_tokens=16, stop=[stop]))
    assert cut == full[: full.index(stop)]


def test_real_server_tiny_timeout_then_recovers(llama_server_url: str) -> None:
    g = gen(llama_server_url, timeout_s=0.05, streaming=False)
    with pytest.raises(GenerationError, match="timeout"):
        run(g, max_tokens=16)
    text, _ = run(gen(llama_server_url, timeout_s=120), max_tokens=4)
    assert text


def test_real_server_unknown_route_is_clear(llama_server_url: str) -> None:
    # A wrong base URL (missing /v1) gets the server's 404, named as such.
    g = gen(llama_server_url.removesuffix("/v1") + "/nope", timeout_s=30)
    with pytest.raises(GenerationError, match="HTTP 404"):
        run(g, max_tokens=4)


def test_socket_closed_mid_response() -> None:
    # A server that accepts and hangs up without a reply: a connection error, not a hang.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        import threading

        def hang_up() -> None:
            conn, _ = s.accept()
            conn.recv(65536)
            conn.close()

        t = threading.Thread(target=hang_up, daemon=True)
        t.start()
        with pytest.raises(GenerationError, match=r"unreachable|malformed"):
            run(gen(f"http://127.0.0.1:{port}/v1"))


def test_egress_guard_client_is_used() -> None:
    from sovra.config import EndpointConfig
    from sovra.egress import EgressDenied, EgressGuard, openai_http_client

    with ScriptedServer([Reply(sse=[chunk_json("allowed"), "[DONE]"])]) as srv:
        ep = EndpointConfig(name="reg", kind="openai", model="m", base_url=srv.url, max_retries=0)
        guard = EgressGuard([ep])
        g = OpenAICompatibleGenerator.from_endpoint(ep, http_client=openai_http_client(guard))
        assert "".join(g.stream(MSGS)) == "allowed"
        # A generator for an unregistered URL, built on the same guarded client: never sent.
        url = f"http://127.0.0.1:{free_port()}/v1"
        stray = gen(url, name="stray", http_client=openai_http_client(guard))
        # The guard's refusal is a policy decision: it reaches the caller as EgressDenied.
        with pytest.raises(EgressDenied, match="not a registered endpoint"):
            run(stray)
        assert len(srv.requests) == 1
