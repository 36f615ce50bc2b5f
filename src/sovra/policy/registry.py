"""`sovra endpoint add|remove`: edit the `[[endpoints]]` blocks of sovra.toml as text.

The file is edited, not re-serialised, so the operator's comments and layout survive. The
edited text is validated as a whole configuration before it replaces the file (atomically);
a change that would make the configuration invalid — a duplicate name, a missing base_url,
removing the endpoint `[answer]` uses — is refused and the file is left as it was.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from sovra.config import ConfigError, EndpointConfig, parse_config
from sovra.storage import atomic_write

_HEADER = re.compile(r"^\s*\[\[\s*endpoints\s*\]\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def endpoint_block(endpoint: EndpointConfig) -> str:
    """The TOML block of an endpoint: fields that differ from the defaults, plus the key ones."""
    defaults = EndpointConfig(name="x", kind="embedded", model="x").model_dump()
    data = endpoint.model_dump()
    always = ("name", "kind", "model", "hosting", "jurisdiction", "max_classification", "pii")
    lines = ["[[endpoints]]"]
    for key, value in data.items():
        if value is None or (key not in always and value == defaults.get(key)):
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _validate(text: str, path: Path) -> None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: the edit would not be valid TOML: {exc}") from None
    parse_config(data, path.resolve().parent, path)


def add_endpoint(path: Path, endpoint: EndpointConfig) -> str:
    text = path.read_text(encoding="utf-8")
    new = text if text.endswith("\n") or not text else text + "\n"
    new += "\n" + endpoint_block(endpoint)
    _validate(new, path)
    atomic_write(path, new)
    return new


def remove_endpoint(path: Path, name: str) -> str:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    blocks: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        if _HEADER.match(lines[i]):
            end = i + 1
            while end < len(lines) and not _ANY_HEADER.match(lines[end]):
                end += 1
            nxt = end
            # comments just above the next header belong to it, not to this block
            while end > i + 1 and (
                not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")
            ):
                end -= 1
            blocks.append((i, end))
            i = nxt
        else:
            i += 1
    for start, end in blocks:
        body = tomllib.loads("".join(lines[start + 1 : end]))
        if body.get("name") == name:
            new = "".join(lines[:start] + lines[end:])
            _validate(new, path)
            atomic_write(path, new)
            return new
    raise ConfigError(f"{path}: no [[endpoints]] block with name = {name!r}")
