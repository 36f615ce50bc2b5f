"""The Cedar policy engine: load, validate and version policy files; decide requests.

Policies live as `*.cedar` files in `<home>/policies/` (the shipped defaults when that folder
is absent or empty). A policy set is checked against the schema before it becomes active: a
syntax error is reported with the file and the line of the policy that failed, a schema error
with the policy's @id and the file. `reload()` keeps the previous set when the new one is bad.

Every decision names the policies that decided it (their `@id`), and the version of the set
(a hash of the files' contents), so the audit log can say under which rule data moved. Cedar
skips a policy whose evaluation errors; for a `forbid` that would silently allow, so any
evaluation error here turns the decision into a deny.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cedarpy

from sovra.errors import Invalid

ACTIONS: tuple[str, ...] = (
    "search",
    "ask",
    "send_to_endpoint",
    "run_workflow",
    "approve",
    "export",
    "erase",
    "administer",
)
DEFAULT_DENY = "default-deny"
"""Recorded as the deciding policy when no policy permitted the request."""
_CEDAR_ID = re.compile(r"policy `(policy\d+)`")
POLICY_ERROR = "policy-error"
"""Recorded when evaluation raised an error; the request is denied."""


class PolicyError(Invalid):
    """A policy set cannot be used; the message names the file, the line or @id, and the reason."""


def _defaults() -> Any:
    return resources.files("sovra.policy") / "defaults"


def default_schema_text() -> str:
    text: str = (_defaults() / "schema.cedarschema").read_text(encoding="utf-8")
    return text


def default_policy_files() -> list[tuple[str, str]]:
    """(name, text) of the shipped policy files, in name order."""
    folder = _defaults() / "policies"
    items = [(p.name, p.read_text(encoding="utf-8")) for p in folder.iterdir()]
    return sorted((n, t) for n, t in items if n.endswith(".cedar"))


@dataclass(frozen=True)
class PolicyInfo:
    """One policy of the active set: where it came from and what it says about itself."""

    cedar_id: str
    id: str
    effect: str
    file: str
    line: int
    advice: str = ""


@dataclass(frozen=True)
class Entity:
    """A Cedar entity: `type`, `id`, attributes and parent entities (type, id)."""

    type: str
    id: str
    attrs: Mapping[str, object] = field(default_factory=dict)
    parents: tuple[tuple[str, str], ...] = ()

    @property
    def uid(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    def to_json(self) -> dict[str, object]:
        return {
            "uid": self.uid,
            "attrs": {
                k: sorted(v) if isinstance(v, set | frozenset) else v for k, v in self.attrs.items()
            },
            "parents": [{"type": t, "id": i} for t, i in self.parents],
        }


@dataclass(frozen=True)
class Request:
    """One question to the engine: may `principal` do `action` on `resource`, given `context`?"""

    principal: Entity
    action: str
    resource: Entity
    context: Mapping[str, object] | None = None
    extra_entities: tuple[Entity, ...] = ()


@dataclass(frozen=True)
class PolicyDecision:
    """The engine's answer. `policy_ids` are the @ids that decided it (or default-deny)."""

    allowed: bool
    policy_ids: tuple[str, ...]
    version: str
    errors: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()

    @property
    def decision(self) -> str:
        return "allow" if self.allowed else "deny"


def _split_statements(text: str) -> list[tuple[int, str]]:
    """Split Cedar text into (first line, statement) at top-level `;`, skipping strings and
    comments, so a parse error can be pinned to the policy that holds it."""
    out: list[tuple[int, str]] = []
    start = 0
    start_line = 1
    line = 1
    i = 0
    in_string = False
    seen_code = False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
            elif ch == "\n":
                line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif ch == '"':
            in_string = True
            if not seen_code:
                seen_code, start_line = True, line
        elif ch == "\n":
            line += 1
        elif ch == ";":
            out.append((start_line, text[start : i + 1]))
            start, seen_code = i + 1, False
        elif not ch.isspace() and not seen_code:
            seen_code, start_line = True, line
        i += 1
    if seen_code:
        out.append((start_line, text[start:]))
    return out


def _parse(files: Sequence[tuple[str, str]]) -> tuple[str, list[PolicyInfo]]:
    """Parse every file; return the joined text and per-policy info in Cedar's id order."""
    infos: list[PolicyInfo] = []
    seen_ids: dict[str, str] = {}
    for name, text in files:
        for line, stmt in _split_statements(text):
            try:
                parsed = json.loads(cedarpy.policies_to_json_str(stmt))
            except ValueError as exc:
                raise PolicyError(f"{name}:{line}: {exc}") from None
            for pol in parsed.get("staticPolicies", {}).values():
                notes = pol.get("annotations", {})
                pid = notes.get("id")
                if not pid:
                    raise PolicyError(
                        f'{name}:{line}: the policy has no @id("..."); every policy needs one so'
                        " decisions can name it"
                    )
                if pid in seen_ids:
                    raise PolicyError(
                        f"{name}:{line}: @id({pid!r}) is already used in {seen_ids[pid]}"
                    )
                seen_ids[pid] = f"{name}:{line}"
                infos.append(
                    PolicyInfo(
                        cedar_id=f"policy{len(infos)}",
                        id=pid,
                        effect=pol["effect"],
                        file=name,
                        line=line,
                        advice=notes.get("advice", ""),
                    )
                )
            if parsed.get("templates"):
                raise PolicyError(f"{name}:{line}: policy templates are not supported")
    return "\n".join(text for _, text in files), infos


class PolicySet:
    """An immutable, validated policy set: the Cedar handles plus each policy's metadata."""

    def __init__(self, files: Sequence[tuple[str, str]], schema_text: str) -> None:
        try:
            self.schema = cedarpy.Schema.from_str(schema_text)
        except ValueError as exc:
            raise PolicyError(f"schema: {exc}") from None
        text, infos = _parse(files)
        if not infos:
            raise PolicyError("no policies found; everything would be denied")
        result = cedarpy.validate_policies(text, self.schema)
        if not result.validation_passed:
            by_cedar = {p.cedar_id: p for p in infos}
            problems = []
            for err in result.errors:
                info = by_cedar.get(err.policy_id)
                where = f"{info.file}:{info.line} @id({info.id!r})" if info else err.policy_id
                problems.append(f"{where}: {err.error}")
            raise PolicyError("policies do not match the schema:\n  " + "\n  ".join(problems))
        self.handle = cedarpy.PolicySet.from_str(text)
        if len(self.handle) != len(infos):  # our splitter and Cedar must agree on the ids
            raise PolicyError("could not map policies to their files; put one policy per `;`")
        self.policies: dict[str, PolicyInfo] = {p.cedar_id: p for p in infos}
        digest = hashlib.sha256(schema_text.encode())
        for name, body in files:
            digest.update(b"\0" + name.encode() + b"\0" + body.encode())
        self.version = "sha256:" + digest.hexdigest()[:16]
        self.files = tuple(name for name, _ in files)

    def by_id(self, policy_id: str) -> PolicyInfo | None:
        for info in self.policies.values():
            if info.id == policy_id:
                return info
        return None


def _read_folder(folder: Path) -> list[tuple[str, str]]:
    files = sorted(folder.glob("*.cedar"))
    out = []
    for path in files:
        try:
            out.append((path.name, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read: {exc}") from None
    return out


class PolicyEngine:
    """Decides requests against the active policy set; thread-safe reloads."""

    def __init__(self, policy_set: PolicySet, folder: Path | None = None) -> None:
        self._set = policy_set
        self._folder = folder
        self._lock = threading.Lock()
        self._seen = self._fingerprint()

    @classmethod
    def default(cls) -> PolicyEngine:
        return cls(PolicySet(default_policy_files(), default_schema_text()))

    @classmethod
    def from_folder(cls, folder: Path, schema_text: str | None = None) -> PolicyEngine:
        """Policies from `folder/*.cedar` (and `folder/schema.cedarschema` if present); the
        shipped defaults when the folder is missing or holds no policy file."""
        return cls(cls._load(folder, schema_text), folder)

    @classmethod
    def for_home(cls, home: Path) -> PolicyEngine:
        return cls.from_folder(home / "policies")

    @staticmethod
    def _load(folder: Path, schema_text: str | None) -> PolicySet:
        files = _read_folder(folder) if folder.is_dir() else []
        schema_file = folder / "schema.cedarschema"
        if schema_text is None:
            schema_text = (
                schema_file.read_text(encoding="utf-8")
                if schema_file.is_file()
                else default_schema_text()
            )
        return PolicySet(files or default_policy_files(), schema_text)

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        if self._folder is None or not self._folder.is_dir():
            return ()
        out = []
        for path in sorted(self._folder.glob("*.cedar*")):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def reload_if_changed(self) -> PolicyError | None:
        """Reload when a file in the folder changed (cheap stat calls; for long-running
        servers). A bad new set is returned as the error and the active set stays."""
        fingerprint = self._fingerprint()
        if fingerprint == self._seen:
            return None
        self._seen = fingerprint
        try:
            self.reload()
        except PolicyError as exc:
            return exc
        return None

    def reload(self) -> PolicySet:
        """Re-read the folder; on any error raise PolicyError and keep the current set."""
        if self._folder is None:
            return self._set
        new = self._load(self._folder, None)
        with self._lock:
            self._set = new
        return new

    @property
    def policy_set(self) -> PolicySet:
        return self._set

    @property
    def version(self) -> str:
        return self._set.version

    def decide(self, request: Request) -> PolicyDecision:
        return self.decide_many([request])[0]

    def decide_many(self, requests: Sequence[Request]) -> list[PolicyDecision]:
        """Decide a batch in one call into Cedar (the router asks once per endpoint)."""
        pset = self._set
        if not requests:
            return []
        entities: dict[tuple[str, str], dict[str, object]] = {}
        cedar_requests = []
        for req in requests:
            if req.action not in ACTIONS:
                raise PolicyError(f"unknown action {req.action!r}; use one of {', '.join(ACTIONS)}")
            for ent in (req.principal, req.resource, *req.extra_entities):
                entities[(ent.type, ent.id)] = ent.to_json()
            for group_type, group_id in req.principal.parents:
                entities.setdefault(
                    (group_type, group_id),
                    {"uid": {"type": group_type, "id": group_id}, "attrs": {}, "parents": []},
                )
            cedar_req: dict[str, object] = {
                "principal": req.principal.uid,
                "action": {"type": "Action", "id": req.action},
                "resource": req.resource.uid,
                "context": dict(req.context or {}),
            }
            cedar_requests.append(cedar_req)
        try:
            results = cedarpy.is_authorized_batch(
                cedar_requests, pset.handle, list(entities.values()), pset.schema
            )
        except (ValueError, RuntimeError) as exc:  # malformed request: deny, say why
            return [
                PolicyDecision(False, (POLICY_ERROR,), pset.version, (str(exc),)) for _ in requests
            ]
        return [self._decision(pset, r) for r in results]

    @staticmethod
    def _decision(pset: PolicySet, result: cedarpy.AuthzResult) -> PolicyDecision:
        errors = tuple(
            _CEDAR_ID.sub(
                lambda m: (
                    f"policy @id({pset.policies[m[1]].id!r})" if m[1] in pset.policies else m[0]
                ),
                str(e),
            )
            for e in result.diagnostics.errors
        )
        infos = [pset.policies[c] for c in result.diagnostics.reasons if c in pset.policies]
        ids = tuple(sorted(i.id for i in infos))
        advice = tuple(sorted({i.advice for i in infos if i.effect == "forbid" and i.advice}))
        if errors:
            return PolicyDecision(False, (*ids, POLICY_ERROR), pset.version, errors, advice)
        if result.allowed:
            return PolicyDecision(True, ids, pset.version)
        if not ids:
            return PolicyDecision(False, (DEFAULT_DENY,), pset.version)
        return PolicyDecision(False, ids, pset.version, (), advice)


def labels_at_most(labels: Iterable[str], ceiling: str) -> set[str]:
    """Labels of an ordered scale up to and including `ceiling` (empty if it is unknown)."""
    ordered = list(labels)
    if ceiling not in ordered:
        return set()
    return set(ordered[: ordered.index(ceiling) + 1])
