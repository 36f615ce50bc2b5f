"""Generation through any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, TGI, a
regional cloud), with the official `openai` client.

Credentials come only from the environment variable the endpoint names (`api_key_env`), or from the
file it names (`api_key_file`, readable by its owner only): the key is read when the generator is
built, handed to the client, and never stored elsewhere, logged or put in an error message. The
client's own `OPENAI_*` environment fallbacks (key, organisation, project, custom headers) are
switched off, so a key meant for one provider is never sent to another.

Retries: the client retries connection errors, timeouts, 408/409/429 and 5xx itself, with
exponential backoff (0.5 s doubling to at most 8 s, 0–25 % jitter) and honours `Retry-After` up to
two minutes; `max_retries` sets how many times. What is left after that becomes a GenerationError
that names the endpoint and its URL.

Egress: a refusal by the egress guard (the `http_client` from `sovra.egress`) is not
retried; it becomes `EgressRefused`, one line naming the endpoint, the refused host and the fix.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import openai

from sovra.egress import EgressDenied
from sovra.models.generation import (
    BadGenerationRequest,
    GenerationError,
    GenerationStats,
    Message,
    StreamedGeneration,
    stream_generation,
)

if TYPE_CHECKING:
    from sovra.config import EndpointConfig

DEFAULT_CONTEXT_LENGTH = 4096
# The OpenAI API accepts at most four stop sequences; more are applied on our side only.
_MAX_SERVER_STOPS = 4
# Chat formats wrap every message in a few control tokens (role markers, separators) and open the
# answer turn with a few more (Gemma: 5 per message + 3; Llama 3: 4-5 per message + 5; ChatML: 4 + 3).
_PER_MESSAGE_TOKENS = 6
_PRIMING_TOKENS = 6
_NO_KEY = "sovra-no-key"  # servers without auth still need a non-empty bearer value


def estimate_tokens(text: str) -> int:
    """A deliberately high token count for `text` when the endpoint's tokenizer is unknown.

    Sub-word tokenizers give about 4 letters per token on English prose and 2.5–3.5 on other
    European languages; punctuation and symbols (frequent in code and tables) are mostly a token
    each; CJK and other non-Latin scripts take one or more tokens per character. Counting 1 token
    per 3 ASCII letters/digits, 1 per ASCII symbol or line break, 1 per other non-space character,
    and never fewer than the number of words errs high, so a prompt budgeted with it fits.
    """
    alnum = 0
    other = 0
    for ch in text:
        if ch.isascii():
            if ch.isalnum():
                alnum += 1
            elif ch == "\n" or not ch.isspace():
                other += 1
        elif not ch.isspace() and not unicodedata.category(ch).startswith("M"):
            other += 1  # combining marks ride on the letter before them
    return max(len(text.split()), math.ceil(alnum / 3) + other)


def _safe_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _api_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if isinstance(msg, str) and msg:
            return msg[:300]
    return (exc.response.text or exc.response.reason_phrase or "")[:300]


def read_api_key(
    endpoint: str,
    api_key_env: str | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
) -> str | None:
    """The key an endpoint references (None: it references none), or a GenerationError that
    names the variable or file and the fix. The key itself never appears in a message."""
    if api_key_env:
        value = os.environ.get(api_key_env, "").strip()
        if not value:
            raise BadGenerationRequest(
                f"endpoint {endpoint}: environment variable {api_key_env} (its api_key_env) "
                "is not set or empty; export the API key in it before starting sovra"
            )
        return value
    if api_key_file:
        path = Path(api_key_file).expanduser()
        try:
            mode = path.stat().st_mode
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BadGenerationRequest(
                f"endpoint {endpoint}: cannot read its api_key_file {path} ({exc.strerror});"
                " write the API key into that file and make it readable by sovra only (chmod 600)"
            ) from None
        if mode & 0o077:
            # A key others can read is as good as leaked; refuse rather than use it.
            raise BadGenerationRequest(
                f"endpoint {endpoint}: api_key_file {path} is readable by other users;"
                f" run `chmod 600 {path}`"
            )
        if not value:
            raise BadGenerationRequest(
                f"endpoint {endpoint}: api_key_file {path} is empty; write the API key into it"
            )
        return value
    return None


class EgressRefused(GenerationError, EgressDenied):
    """The egress guard refused the endpoint's host: a policy decision, reported as one line.

    Both a GenerationError (the CLI prints it as `error: ...`, exit code 4: Unavailable) and
    an EgressDenied (callers that handle refusals specially still can).
    """


def _egress_fix(reason: str) -> str:
    """What would allow a refused destination, from the guard's reason."""
    if "allows only on_prem" in reason:
        return "answer with an on_prem endpoint, or set [egress] airgap = false"
    if "air-gap" in reason or "cannot resolve" in reason:
        return (
            "register the on-prem endpoint by a loopback or private IP address,"
            " or set [egress] airgap = false"
        )
    return (
        "register the host as an endpoint (`sovra endpoint add NAME --base-url URL ...`)"
        " or correct this endpoint's base_url"
    )


class OpenAICompatibleGenerator:
    """A chat model behind an OpenAI-compatible `/v1/chat/completions` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        name: str | None = None,
        api_key_env: str | None = None,
        api_key_file: str | os.PathLike[str] | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        context_length: int | None = None,
        instruction_tuned: bool = True,
        streaming: bool = True,
        tokenizer: Callable[[str], int] | None = None,
        http_client: Any | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise BadGenerationRequest(
                f"endpoint {name or model}: base_url {base_url!r} must start with http:// or "
                "https:// (for example http://127.0.0.1:8000/v1)"
            )
        self._name = name or model
        self._url = _safe_url(base_url)
        self._model = model
        self._context_length = context_length or DEFAULT_CONTEXT_LENGTH
        self._instruction_tuned = instruction_tuned
        self._streaming = streaming
        self._timeout_s = timeout_s
        self._tokenizer = tokenizer
        key = read_api_key(self._name, api_key_env, api_key_file) or _NO_KEY
        # `http_client`: the egress guard's client (sovra.egress.openai_http_client), so
        # every request, retries and redirects included, is checked against the endpoint registry.
        # Its refusal (EgressDenied) is not retried by the client and becomes EgressRefused.
        self._client = openai.OpenAI(
            api_key=key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=http_client,
        )
        # The client would otherwise add OPENAI_ORG_ID / OPENAI_PROJECT_ID / OPENAI_CUSTOM_HEADERS
        # from this process's environment to requests for a server that is not OpenAI's.
        self._client.organization = None
        self._client.project = None
        self._client.admin_api_key = None
        self._client._custom_headers = {}

    @classmethod
    def from_endpoint(
        cls,
        endpoint: EndpointConfig,
        *,
        tokenizer: Callable[[str], int] | None = None,
        http_client: Any | None = None,
    ) -> OpenAICompatibleGenerator:
        if endpoint.base_url is None:
            raise BadGenerationRequest(f"endpoint {endpoint.name} has no base_url")
        return cls(
            endpoint.base_url,
            endpoint.model,
            name=endpoint.name,
            api_key_env=endpoint.api_key_env,
            api_key_file=endpoint.api_key_file,
            timeout_s=endpoint.timeout_s,
            max_retries=endpoint.max_retries,
            context_length=endpoint.context_length,
            instruction_tuned=endpoint.instruction_tuned,
            tokenizer=tokenizer,
            http_client=http_client,
        )

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def endpoint_name(self) -> str:
        return self._name

    @property
    def base_url(self) -> str:
        return self._url

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def instruction_tuned(self) -> bool:
        return self._instruction_tuned

    @property
    def exact_token_counts(self) -> bool:
        """False when `count_tokens` is the conservative estimate (no tokenizer given)."""
        return self._tokenizer is not None

    def count_tokens(self, text: str) -> int:
        """Exact with a `tokenizer`; otherwise `estimate_tokens`, which errs high."""
        return self._tokenizer(text) if self._tokenizer is not None else estimate_tokens(text)

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
        stats = GenerationStats(model=self._model)
        msgs = [dict(m) for m in messages]
        stats.tokens_in = (
            sum(self.count_tokens(m.get("content", "")) for m in msgs)
            + _PER_MESSAGE_TOKENS * len(msgs)
            + _PRIMING_TOKENS
        )
        request: dict[str, Any] = {
            "model": self._model,
            "messages": msgs,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        stops = [s for s in stop if s]
        if stops:
            request["stop"] = stops[:_MAX_SERVER_STOPS]
        # Stops are enforced on our side as well: some servers ignore `stop` or accept only four.
        return stream_generation(self._deltas(request, stats), stats, stops)

    def _fail(self, what: str) -> GenerationError:
        return GenerationError(f"endpoint {self._name} at {self._url} {what}")

    def _deltas(self, request: dict[str, Any], stats: GenerationStats) -> Iterator[str]:
        """The answer's text as the endpoint sends it; its failures as GenerationErrors."""
        try:
            if self._streaming:
                yield from self._stream(request, stats)
            else:
                yield self._complete(request, stats)
        except EgressDenied as exc:
            reason = " ".join(str(exc).split())  # one line, whatever the guard wrote
            raise EgressRefused(
                f"endpoint {self._name} at {self._url}: {reason}; to allow it: {_egress_fix(reason)}"
            ) from None
        except openai.APITimeoutError:
            raise self._fail(f"did not answer within {self._timeout_s:g} s (timeout)") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise self._fail(f"is unreachable ({type(cause).__name__}: {cause})") from None
        except openai.AuthenticationError as exc:
            raise self._fail(
                f"rejected the API key (HTTP 401: {_api_message(exc)}); check its api_key_env"
            ) from None
        except openai.RateLimitError as exc:
            raise self._fail(
                f"is rate limiting (HTTP 429) and still was after retries: {_api_message(exc)}"
            ) from None
        except openai.APIStatusError as exc:
            raise self._fail(
                f"answered HTTP {exc.status_code}: {_api_message(exc) or 'no detail'}"
            ) from None
        except (openai.APIResponseValidationError, ValueError, AttributeError, TypeError) as exc:
            # json.JSONDecodeError is a ValueError; missing fields surface as Attribute/TypeError.
            raise self._fail(
                f"sent a malformed response ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        except openai.APIError as exc:  # e.g. an `error` event inside the stream
            raise self._fail(f"reported an error: {str(exc)[:300]}") from None

    def _stream(self, request: dict[str, Any], stats: GenerationStats) -> Iterator[str]:
        chunks = 0
        content_chunks = 0
        usage_seen = False
        with self._client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        ) as response:
            for chunk in response:
                chunks += 1
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    stats.tokens_in = int(usage.prompt_tokens)
                    stats.tokens_out = int(usage.completion_tokens)
                    usage_seen = True
                choices = chunk.choices
                if not isinstance(choices, list):
                    raise TypeError("chunk has no choices list")
                for choice in choices[:1]:
                    if choice.finish_reason:
                        stats.finish_reason = str(choice.finish_reason)
                    content = choice.delta.content if choice.delta is not None else None
                    if content is None:
                        continue
                    if not isinstance(content, str):
                        raise TypeError(f"delta content is {type(content).__name__}, not text")
                    content_chunks += 1
                    # Closed here at a stop sequence: leaving the block closes the response,
                    # which tells the server to stop generating.
                    yield content
        if chunks == 0:
            raise ValueError("the stream ended without a single event")
        if not usage_seen:
            # Servers without `include_usage` send about one token per content event.
            stats.tokens_out = content_chunks

    def _complete(self, request: dict[str, Any], stats: GenerationStats) -> str:
        response = self._client.chat.completions.create(**request, stream=False)
        if isinstance(response, str | bytes):
            raise ValueError(f"body is not a chat completion: {str(response)[:120]!r}")
        choices = response.choices
        if not isinstance(choices, list) or not choices:
            raise ValueError("the response has no choices")
        message = choices[0].message
        content = message.content if message is not None else None
        if content is not None and not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}, not text")
        stats.finish_reason = str(choices[0].finish_reason or "")
        usage = response.usage
        if usage is not None:
            stats.tokens_in = int(usage.prompt_tokens)
            stats.tokens_out = int(usage.completion_tokens)
        else:
            stats.tokens_out = estimate_tokens(content or "")
        return content or ""

    def __repr__(self) -> str:
        # Never the key: only what the operator configured publicly.
        return f"OpenAICompatibleGenerator({self._name!r}, {self._url!r}, model={self._model!r})"
