"""Workflow definitions: YAML → validated pydantic models, with errors that name file:line and the fix.

A definition lists typed `inputs` and `steps`; a step's fields may reference the run's inputs and
earlier steps' outputs by name (`${input.body}`, `${steps.classify_category.label}`). Every
reference is checked when the file is loaded, so a typo fails at `sovra flow list`, not mid-run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sovra.flows.base import FlowError


class DefinitionError(FlowError):
    """A workflow file is invalid; the message starts with `file:line`."""

    path: Path | None = None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


NAME = r"^[a-z0-9][a-z0-9_-]*$"
REF = re.compile(r"\$\{([^}]*)\}")
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")

InputType = Literal["string", "text", "integer", "number", "boolean", "email", "list"]


class InputField(_Strict):
    type: InputType = "string"
    required: bool = True
    default: Any = None
    description: str = ""
    choices: tuple[Any, ...] | None = None


class Trigger(_Strict):
    """How runs start. `schedule` needs a 5-field cron; `new_document` names a configured source."""

    kind: Literal["manual", "schedule", "new_document", "api"] = "manual"
    cron: str | None = None
    source: str | None = None
    run_as: str | None = None
    """The directory user an automatic run acts as (its requester); required for schedule and
    new_document, since a run never acts as nobody."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _complete(self) -> Trigger:
        if self.kind == "schedule":
            from sovra.flows.triggers import Cron

            if not self.cron:
                raise ValueError("a schedule trigger needs `cron:`, e.g. cron: '0 8 * * 1-5'")
            try:
                Cron(self.cron)
            except FlowError as exc:
                raise ValueError(str(exc)) from None
        elif self.cron is not None:
            raise ValueError("`cron` only applies to `kind: schedule`")
        if self.kind == "new_document" and not self.source:
            raise ValueError("a new_document trigger needs `source:` naming a configured source")
        if self.kind != "new_document" and self.source is not None:
            raise ValueError("`source` only applies to `kind: new_document`")
        if self.kind in ("schedule", "new_document") and not self.run_as:
            raise ValueError(f"a {self.kind} trigger needs `run_as:` naming the user runs act as")
        return self


class _Step(_Strict):
    id: Annotated[str, Field(pattern=NAME)]
    title: str = ""


class RetrieveStep(_Step):
    """Search as the run's requester (never wider) → passages."""

    kind: Literal["retrieve"]
    query: str
    k: int = Field(default=5, ge=1, le=50)
    sources: tuple[str, ...] | None = None
    max_classification: str | None = None
    """Read only documents up to this label (e.g. `internal`), however high the requester's."""


class ClassifyStep(_Step):
    """A trained classifier by name, or a zero-shot one over `labels` → label + confidence."""

    kind: Literal["classify"]
    text: str
    classifier: str | None = None
    labels: tuple[str, ...] | None = None
    label_names: dict[str, str] = Field(default_factory=dict)
    """Code → name for a classifier trained on coded labels (helpdesk exports often carry
    `4` where people say "access and accounts"): the run view, approval page, mail and ticket
    store show the name. A code without a name shows as `code <n>`, never as a bare number."""

    @model_validator(mode="after")
    def _one_source(self) -> ClassifyStep:
        if (self.classifier is None) == (self.labels is None):
            raise ValueError(
                "a classify step needs exactly one of `classifier:` (a trained classifier's"
                " name) or `labels:` (a list for zero-shot classification)"
            )
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError("`labels` needs at least two labels")
        return self


class ExtractField(_Strict):
    """A field found in text by a regular expression (its first group, or the whole match)."""

    pattern: str
    type: Literal["string", "integer", "number", "email"] = "string"
    required: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class ExtractStep(_Step):
    kind: Literal["extract"]
    text: str
    fields: dict[Annotated[str, Field(pattern=NAME)], ExtractField] = Field(min_length=1)


class SummaryStep(_Step):
    """A short question for search and drafting from a ticket's `headline` and `text`.

    The headline (a ticket's title) is the requester's own one-line summary; when it is too short to search on, the
    text's first sentence stands in. Sentences carrying an address or a link are left out: an
    instruction to the workflow ("send the answer to x@evil.example") is not the problem.
    """

    kind: Literal["summary"]
    headline: str = ""
    text: str = ""
    min_title_words: int = Field(default=2, ge=1, le=20)
    max_words: int = Field(default=16, ge=3, le=80)


class DraftStep(_Step):
    """Answer `question` from what the requester may read → text with citations (extractive by default)."""

    kind: Literal["draft"]
    question: str
    passages: str | None = None
    """A reference to a retrieve step's `chunk_ids` (`${steps.related.chunk_ids}`): draft from
    exactly the passages it found (each read again as the requester), not from a new search."""
    min_evidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Relevant only when the best quoted sentence scores at least this (the answer's
    `evidence`); unset = the answerer's calibrated `[answer] min_score` alone. A reply mailed
    without a person reading it may need a stricter bar than an answer on screen."""
    nothing_found: str | None = None
    """When no passage is relevant enough to quote (the answerer's calibrated evidence
    threshold), produce no reply and go to this approve step: a person writes the reply or
    rejects the run. Without it, a draft that found nothing fails the run — an empty
    answer is never sent on."""
    extractive: bool = True
    endpoint: str | None = None
    sources: tuple[str, ...] | None = None
    max_classification: str | None = None
    """Draft only from documents up to this label — for drafts that leave the organisation
    (an e-mail to a requester who may not read what the workflow's requester can)."""


class ApproveStep(_Step):
    """N-of-M approval from `group`; after `expiry_hours` it escalates to `escalate_to`."""

    kind: Literal["approve"]
    group: Annotated[str, Field(pattern=NAME)]
    required: int = Field(default=1, ge=1, le=20)
    escalate_to: Annotated[str, Field(pattern=NAME)] | None = None
    expiry_hours: float | None = Field(default=None, gt=0)
    edits: Annotated[str, Field(pattern=NAME)] | None = None
    """A draft step before this one whose text approvers may edit; the edit is recorded and
    becomes the approved text."""


class ActStep(_Step):
    """Call an action adapter (named in the workflow's `actions` allow-list) with `params`."""

    kind: Literal["act"]
    adapter: Annotated[str, Field(pattern=NAME)]
    params: dict[str, Any] = Field(default_factory=dict)


class Condition(_Strict):
    """`value` (usually a reference) compared with exactly one operator."""

    value: Any
    equals: Any = None
    not_equals: Any = None
    in_: tuple[Any, ...] | None = Field(default=None, alias="in")
    not_in: tuple[Any, ...] | None = None
    below: float | None = None
    at_least: float | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        ops = [k for k in self.operators() if getattr(self, k) is not None]
        if len(ops) != 1:
            raise ValueError(
                "a condition needs exactly one of equals, not_equals, in, not_in, below, at_least"
            )
        return self

    @staticmethod
    def operators() -> tuple[str, ...]:
        return ("equals", "not_equals", "in_", "not_in", "below", "at_least")

    def holds(self, value: Any) -> bool:
        if self.equals is not None:
            return bool(_same(value, self.equals))
        if self.not_equals is not None:
            return not _same(value, self.not_equals)
        if self.in_ is not None:
            return any(_same(value, v) for v in self.in_)
        if self.not_in is not None:
            return not any(_same(value, v) for v in self.not_in)
        number = _number(value)
        if number is None:
            return False  # unknown means the threshold test fails; `else` is taken
        if self.below is not None:
            return number < self.below
        assert self.at_least is not None
        return number >= self.at_least


def _same(a: Any, b: Any) -> bool:
    return a == b or str(a) == str(b)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class BranchStep(_Step):
    """If the conditions hold (`match: any|all`) go to `then`, else to `else` (default: next step)."""

    kind: Literal["branch"]
    conditions: tuple[Condition, ...] = Field(min_length=1)
    match: Literal["any", "all"] = "any"
    then: str | None = None
    else_: str | None = Field(default=None, alias="else")

    def decide(self, values: Sequence[Any]) -> bool:
        results = [c.holds(v) for c, v in zip(self.conditions, values, strict=True)]
        return any(results) if self.match == "any" else all(results)


Step = Annotated[
    RetrieveStep
    | ClassifyStep
    | ExtractStep
    | SummaryStep
    | DraftStep
    | ApproveStep
    | ActStep
    | BranchStep,
    Field(discriminator="kind"),
]

STEP_OUTPUTS: dict[str, frozenset[str]] = {
    "retrieve": frozenset({"passages", "text", "count", "chunk_ids"}),
    "classify": frozenset({"label", "name", "display", "confidence", "scores", "names"}),
    "summary": frozenset({"text"}),
    "draft": frozenset(
        {
            "text",
            "reason",
            "evidence",
            "provenance",
            "edit",
            "citations",
            "sources",
            "found",
            "endpoint",
            "model",
            "generation",
            "hosting",
            "jurisdiction",
        }
    ),
    "approve": frozenset({"approved", "approvers"}),
    "act": frozenset({"outcome", "replayed", "adapter"}),
    "branch": frozenset({"taken", "matched"}),
}
RUN_FIELDS = frozenset({"id", "requester", "workflow"})
# Parameters that decide who or where an action reaches: they may hold only literals, the run's
# typed inputs or run fields — never a step's output, so model text cannot redirect an action.
ADDRESS_PARAMS: dict[str, frozenset[str]] = {
    "email": frozenset({"to", "cc", "bcc"}),
    "webhook": frozenset({"url"}),
}


class Workflow(_Strict):
    name: Annotated[str, Field(pattern=NAME)]
    description: str = ""
    trigger: Trigger = Trigger()
    inputs: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], InputField] = Field(
        default_factory=dict
    )
    access: tuple[str, ...] = ()
    """Who may start runs (access strings, e.g. group:staff), decided by the Cedar policy
    `run_workflow`; empty = administrators only."""
    actions: tuple[str, ...] = ()
    """The adapters this workflow may call (its action allow-list)."""
    steps: tuple[Step, ...] = Field(min_length=1)

    @field_validator("access")
    @classmethod
    def _access(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from sovra.domain import DomainError, validate_access

        try:
            return validate_access(value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None

    def step_index(self, step_id: str) -> int:
        for i, step in enumerate(self.steps):
            if step.id == step_id:
                return i
        known = ", ".join(s.id for s in self.steps)
        raise FlowError(f"workflow {self.name!r} has no step {step_id!r} (steps: {known})")

    def outputs_of(self, step: Any) -> frozenset[str]:
        if isinstance(step, ExtractStep):
            return frozenset(step.fields)
        return STEP_OUTPUTS[step.kind]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Workflow:
        return cls.model_validate(json.loads(text))


# -- references ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    loc: tuple[str | int, ...]
    message: str


def references(value: Any) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """Every `${...}` in a (nested) value, with its path inside the value."""
    if isinstance(value, str):
        for m in REF.finditer(value):
            yield (), m.group(1).strip()
    elif isinstance(value, Mapping):
        for k, v in value.items():
            for loc, ref in references(v):
                yield (k, *loc), ref
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            for loc, ref in references(v):
                yield (i, *loc), ref


def check_references(wf: Workflow) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, Any] = {}
    ids = [s.id for s in wf.steps]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        problems.append(Problem(("steps",), f"step id {dup!r} is used twice; ids must be unique"))
    for index, step in enumerate(wf.steps):
        fields = step.model_dump(by_alias=True, exclude={"id", "kind", "title"})
        for loc, ref in references(fields):
            msg = _check_ref(ref, wf, seen)
            if msg:
                problems.append(Problem(("steps", index, *loc), msg))
        if isinstance(step, ActStep):
            if step.adapter not in wf.actions:
                problems.append(
                    Problem(
                        ("steps", index, "adapter"),
                        f"adapter {step.adapter!r} is not in this workflow's `actions:` allow-list"
                        f" ({', '.join(wf.actions) or 'empty'}); add it there to allow it",
                    )
                )
            for key in ADDRESS_PARAMS.get(step.adapter, frozenset()):
                for loc, ref in references(step.params.get(key)):
                    if not (ref.startswith("input.") or ref.startswith("run.")):
                        problems.append(
                            Problem(
                                ("steps", index, "params", key, *loc),
                                f"`{key}` may only use literals or ${{input.…}}: an address must"
                                f" never come from a step's output (got ${{{ref}}})",
                            )
                        )
        if isinstance(step, BranchStep):
            for key, target in (("then", step.then), ("else", step.else_)):
                if target is None:
                    continue
                if target not in ids:
                    problems.append(
                        Problem(("steps", index, key), f"no step {target!r} to branch to")
                    )
                elif ids.index(target) <= index:
                    problems.append(
                        Problem(
                            ("steps", index, key),
                            f"branch target {target!r} must come after this step (no loops)",
                        )
                    )
        if isinstance(step, DraftStep):
            problems.extend(_check_draft(step, index, ids, wf))
        if isinstance(step, ApproveStep) and step.edits is not None:
            target = seen.get(step.edits)
            if not isinstance(target, DraftStep):
                problems.append(
                    Problem(
                        ("steps", index, "edits"),
                        f"`edits` must name a draft step before this one (got {step.edits!r})",
                    )
                )
        seen[step.id] = step
    return problems


def _check_draft(step: DraftStep, index: int, ids: list[str], wf: Workflow) -> list[Problem]:
    problems: list[Problem] = []
    if step.passages is not None:
        whole = REF.fullmatch(step.passages.strip())
        parts = whole.group(1).strip().split(".") if whole else []
        source = next((s for s in wf.steps[:index] if parts and s.id == parts[1]), None)
        if len(parts) != 3 or parts[2] != "chunk_ids" or not isinstance(source, RetrieveStep):
            problems.append(
                Problem(
                    ("steps", index, "passages"),
                    "`passages` must be exactly ${steps.<retrieve step>.chunk_ids} of an earlier"
                    f" retrieve step (got {step.passages!r})",
                )
            )
    if step.nothing_found is not None:
        at = ids.index(step.nothing_found) if step.nothing_found in ids else -1
        if at <= index or not isinstance(wf.steps[at], ApproveStep):
            problems.append(
                Problem(
                    ("steps", index, "nothing_found"),
                    "`nothing_found` must name an approve step after this one, where a person"
                    f" writes the reply (got {step.nothing_found!r})",
                )
            )
    return problems


def _check_ref(ref: str, wf: Workflow, seen: Mapping[str, Any]) -> str | None:
    parts = ref.split(".")
    if parts[0] == "input":
        if len(parts) != 2 or parts[1] not in wf.inputs:
            return f"${{{ref}}}: no such input (inputs: {', '.join(wf.inputs) or 'none'})"
        return None
    if parts[0] == "run":
        if len(parts) != 2 or parts[1] not in RUN_FIELDS:
            return f"${{{ref}}}: run fields are {', '.join(sorted(RUN_FIELDS))}"
        return None
    if parts[0] == "steps":
        if len(parts) < 3:
            return f"${{{ref}}}: write ${{steps.<step id>.<output>}}"
        step = seen.get(parts[1])
        if step is None:
            return (
                f"${{{ref}}}: no earlier step {parts[1]!r} (a step may only use the outputs of"
                " steps before it)"
            )
        outputs = wf.outputs_of(step)
        if parts[2] not in outputs:
            return f"${{{ref}}}: step {parts[1]!r} outputs {', '.join(sorted(outputs))}"
        return None
    return f"${{{ref}}}: references start with input., steps. or run."


# -- rendering at run time ----------------------------------------------------------------------


def lookup(ref: str, context: Mapping[str, Any]) -> Any:
    value: Any = context
    for part in ref.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Fill references: a string that is exactly one reference keeps the value's type."""
    if isinstance(value, str):
        whole = REF.fullmatch(value.strip())
        if whole:
            return lookup(whole.group(1).strip(), context)

        def text(m: re.Match[str]) -> str:
            v = lookup(m.group(1).strip(), context)
            return "" if v is None else v if isinstance(v, str) else json.dumps(v)

        return REF.sub(text, value)
    if isinstance(value, Mapping):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, context) for v in value]
    return value


def coerce_inputs(wf: Workflow, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check a run's inputs against the workflow's typed fields; errors name the field."""
    unknown = sorted(set(raw) - set(wf.inputs))
    if unknown:
        raise FlowError(
            f"workflow {wf.name!r} has no input {', '.join(unknown)}"
            f" (inputs: {', '.join(wf.inputs) or 'none'})"
        )
    out: dict[str, Any] = {}
    for name, spec in wf.inputs.items():
        if name not in raw or raw[name] is None:
            if spec.required and spec.default is None:
                raise FlowError(f"input {name!r} ({spec.type}) is required by {wf.name!r}")
            out[name] = spec.default
            continue
        out[name] = _coerce(name, spec, raw[name])
    return out


def _coerce(name: str, spec: InputField, value: Any) -> Any:
    def bad(expected: str) -> FlowError:
        return FlowError(f"input {name!r} must be {expected}, got {value!r}")

    result: Any
    if spec.type in ("string", "text"):
        if not isinstance(value, str):
            raise bad("a string")
        if spec.type == "string" and any(c in value for c in "\r\n\0"):
            raise bad("one line of text (use type: text for several lines)")
        result = value
    elif spec.type == "email":
        if not isinstance(value, str) or not _EMAIL.match(value.strip()):
            raise bad("one e-mail address (name@example.org)")
        result = value.strip()
    elif spec.type == "integer":
        if isinstance(value, bool):
            raise bad("an integer")
        try:
            result = int(value)
        except (TypeError, ValueError):
            raise bad("an integer") from None
        if str(result) != str(value).strip():
            raise bad("an integer")
    elif spec.type == "number":
        if isinstance(value, bool) or _number(value) is None:
            raise bad("a number")
        result = float(value)
    elif spec.type == "boolean":
        if not isinstance(value, bool):
            raise bad("true or false")
        result = value
    else:
        if not isinstance(value, list):
            raise bad("a list")
        result = value
    if spec.choices is not None and not any(_same(result, c) for c in spec.choices):
        raise bad("one of " + ", ".join(map(str, spec.choices)))
    return result


# -- loading ------------------------------------------------------------------------------------


def _node_at(root: yaml.Node | None, loc: Sequence[str | int]) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error path (union tags in the path are skipped)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            key = "in" if part == "in_" else "else" if part == "else_" else part
            match = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if match is None:
                continue
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
    return node


def _line(root: yaml.Node | None, loc: Sequence[str | int]) -> int:
    node = _node_at(root, loc)
    return node.start_mark.line + 1 if node is not None else 1


def parse(text: str, origin: str = "<workflow>") -> Workflow:
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise DefinitionError(f"{origin}:{line}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise DefinitionError(
            f"{origin}:1: a workflow file must be a mapping with name, inputs and steps"
        )
    try:
        wf = Workflow.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc if p not in _STEP_KINDS) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field; remove it or check its spelling"
            elif err["type"] == "union_tag_invalid":
                msg = "`kind` must be one of " + ", ".join(sorted(_STEP_KINDS))
                loc = (*loc, "kind")
            elif err["type"] == "missing":
                msg = f"`{loc[-1]}` is required here; add it"
            lines.append(f"{origin}:{_line(root, loc)}: {where}: {msg}")
        raise DefinitionError("\n".join(lines)) from None
    problems = check_references(wf)
    if problems:
        raise DefinitionError(
            "\n".join(f"{origin}:{_line(root, p.loc)}: {p.message}" for p in problems)
        )
    return wf


_STEP_KINDS = frozenset(
    {"retrieve", "classify", "extract", "summary", "draft", "approve", "act", "branch"}
)

DEFAULTS_DIR = Path(__file__).parent / "defaults"


def load_file(path: Path) -> Workflow:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot read: {exc.strerror}") from None
    wf = parse(text, str(path))
    if wf.name != path.stem:
        raise DefinitionError(
            f"{path}:1: the workflow is named {wf.name!r} but the file is {path.name};"
            f" rename the file to {wf.name}.yaml"
        )
    return wf


def _yaml_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    return []


def load_all(
    home: Path, extra: Path | None = None, errors: list[DefinitionError] | None = None
) -> dict[str, tuple[Workflow, Path]]:
    """Shipped defaults, then `[flows] definitions`, then `<home>/workflows`; a later tier replaces
    an earlier workflow of the same name, two files with one name in the same tier are an error.

    With `errors`, a broken file is reported there (its `path` set) and the others still load."""
    found: dict[str, tuple[Workflow, Path]] = {}
    tiers = [DEFAULTS_DIR, *([extra] if extra else []), home / "workflows"]
    for tier in tiers:
        here: dict[str, Path] = {}
        for path in _yaml_files(tier):
            try:
                wf = load_file(path)
            except DefinitionError as exc:
                if errors is None:
                    raise
                exc.path = path
                errors.append(exc)
                found.pop(path.stem, None)  # a broken override never falls back silently
                continue
            if wf.name in here:
                raise DefinitionError(
                    f"{path}:1: workflow {wf.name!r} is also defined in {here[wf.name]};"
                    " keep one of them"
                )
            here[wf.name] = path
            found[wf.name] = (wf, path)
    return found
