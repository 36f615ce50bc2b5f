"""Where a sign-in continues to (`next`): always a path on this site, never another origin —
however a hostile link spells it (tab/newline inside `//`, backslashes, percent-encoding)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from sovra.server.text import safe_next_path

ORIGIN = "https://sovra.example"
HOSTILE = [
    "//evil.example/",
    "/\\evil.example",
    "\\/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    " //evil.example",
    "\x00//evil.example",
    "/%2F/evil.example",
    "/%5Cevil.example",
    "/%09/evil.example",
    "https://evil.example/",
    "HTTPS:evil.example",
    "javascript:alert(1)",
    "/\x0b/evil.example",
    "///evil.example",
]
PIECES = st.sampled_from(
    [
        "/",
        "\\",
        "//",
        "\t",
        "\n",
        "\r",
        " ",
        "%2f",
        "%5c",
        "%09",
        "%2F",
        ":",
        "@",
        "evil.example",
        "https:",
        "javascript:",
        "?",
        "#",
        ".",
        "..",
        "\x00",
        "\x1f",
        "\x7f",
        "a",
        "ask",
    ]
)


def browser_url(path: str) -> str:
    """What a WHATWG browser makes of `path` as a Location: leading/trailing C0 controls and
    spaces stripped, tab/CR/LF removed anywhere, backslashes read as slashes, then resolved
    against our origin."""
    cleaned = re.sub(r"[\t\n\r]", "", path.strip("".join(map(chr, range(0x21)))))
    return urljoin(ORIGIN + "/", cleaned.replace("\\", "/"))


def assert_same_origin(result: str) -> None:
    assert result.startswith("/") and not result.startswith("//"), result
    for form in (result, unquote(result)):
        parts = urlsplit(form)
        assert not parts.scheme and not parts.netloc, result
        resolved = urlsplit(browser_url(form))
        assert (resolved.scheme, resolved.netloc) == ("https", "sovra.example"), result


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_next_becomes_home(hostile: str) -> None:
    assert safe_next_path(hostile) == "/"


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(PIECES, max_size=8).map("".join) | st.text(max_size=40))
def test_next_is_always_a_local_path(value: str) -> None:
    assert_same_origin(safe_next_path(value))


@pytest.mark.parametrize("local", ["/", "/search?q=etcd+quota", "/documents/runbooks:a/b.md#p2"])
def test_local_paths_are_kept(local: str) -> None:
    assert safe_next_path(local) == local


def test_the_login_form_carries_only_a_safe_next(client: TestClient) -> None:
    page = client.get("/login", params={"next": "/\t/evil.example"})
    assert 'value="/"' in page.text and "evil.example" not in page.text
