"""The AI inventory: every AI system in use, what is known about it, and what is missing.

Facts come from where sovra keeps them — the model registry (sha256, licence), the
`[[endpoints]]` (jurisdiction, hosting, legal basis), the workflow definitions (approval steps)
and the tracked evaluation runs (latest metrics and their date). What only the operator can say
(intended purpose, AI Act risk class, owners, a model's origin) is set with `sovra inventory
set` and kept in `<home>/governance/inventory.json` (owner-only, written atomically): a file in
the data dir rather than a `sovra.toml` table, because it changes as an organisation's register
does (owners move, a risk assessment is redone) without redeploying the configuration, and each
change is an audit event. A field nobody set is listed as a gap, never filled in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from sovra.audit import AuditEvent
from sovra.config import Config
from sovra.errors import Invalid, NotFound
from sovra.evals.tracking import TrackedRun, list_runs, tracking_uri
from sovra.flows.definition import ApproveStep, ClassifyStep, DefinitionError, load_all
from sovra.models.registry import ModelRegistry, RegistryError
from sovra.storage import atomic_write

if TYPE_CHECKING:
    from sovra.workspace import Workspace

INVENTORY_FILE = Path("governance") / "inventory.json"
RISK_CLASSES = ("unacceptable", "high", "limited", "minimal")
"""The AI Act's risk tiers (Art. 5 prohibited practices, Art. 6 high-risk, Art. 50
transparency obligations, everything else); the operator assigns one, sovra never guesses."""
ASSISTANT_ID = "assistant:ask"
ASSISTANT_SUITES = ("retrieval", "answers", "pii")
CLASSIFIER_SUITES = ("triage",)
OPERATOR_FIELDS = ("purpose", "risk_class", "owners", "origin", "licence", "notes", "eval_suites")

REQUIRED: dict[str, tuple[str, ...]] = {
    "model": ("licence", "origin", "owners"),
    "endpoint": ("legal_basis", "owners"),
    "assistant": ("purpose", "risk_class", "owners", "evaluation"),
    "workflow": ("purpose", "risk_class", "owners", "evaluation"),
}


class InventoryError(Invalid):
    """The inventory file or a change to it is not valid; the message names the fix."""


class UnknownSystem(NotFound, InventoryError):
    """No AI system of that id is in use."""


class OperatorFields(BaseModel):
    """What the operator states about one system (every field optional until set)."""

    model_config = ConfigDict(extra="forbid")

    purpose: str = ""
    risk_class: str = ""
    owners: tuple[str, ...] = ()
    origin: str = ""
    licence: str = ""
    notes: str = ""
    eval_suites: tuple[str, ...] = ()
    updated_at: str = ""


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    systems: dict[str, OperatorFields] = Field(default_factory=dict)


@dataclass
class Evaluation:
    suite: str
    run_id: str
    started_at: str
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AISystem:
    """One entry of the register: facts sovra knows, the operator's fields, and the gaps."""

    id: str
    kind: str
    name: str
    facts: dict[str, Any]
    operator: OperatorFields
    evaluations: list[Evaluation] = field(default_factory=list)
    oversight: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        op = self.operator.model_dump()
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "facts": self.facts,
            "purpose": op["purpose"] or None,
            "risk_class": op["risk_class"] or None,
            "owners": list(op["owners"]),
            "origin": op["origin"] or None,
            "notes": op["notes"] or None,
            "evaluations": [e.to_dict() for e in self.evaluations],
            "oversight": self.oversight,
            "gaps": self.gaps,
            "updated_at": op["updated_at"] or None,
        }


class InventoryStore:
    """`<home>/governance/inventory.json`: the operator's fields per system id."""

    def __init__(self, home: Path) -> None:
        self.path = home / INVENTORY_FILE

    def read(self) -> dict[str, OperatorFields]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise InventoryError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            return _File.model_validate(json.loads(raw)).systems
        except (ValueError, ValidationError) as exc:
            raise InventoryError(
                f"{self.path} is not a valid inventory file ({str(exc).splitlines()[0]});"
                " fix it or restore it from backup"
            ) from None

    def write(self, systems: Mapping[str, OperatorFields]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = _File(systems=dict(sorted(systems.items())))
        atomic_write(self.path, data.model_dump_json(indent=2) + "\n", mode=0o600)


# -- evaluation runs (tracked by sovra.evals.tracking) ---------------------------------------


def tracked_runs(config: Config, limit: int = 200) -> list[TrackedRun] | None:
    """Tracked evaluation runs, newest first; None when evaluation tracking is not installed
    (mlflow-skinny missing) — the report then says so instead of showing no results."""
    try:
        return list_runs(tracking_uri(config), limit=limit)
    except ImportError:
        return None


def _started(run: Any) -> str:
    value = getattr(run, "started_at", "")
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def latest_by_suite(runs: Sequence[Any] | None) -> dict[str, Evaluation]:
    latest: dict[str, Evaluation] = {}
    for run in runs or ():
        suite = str(run.suite)
        if suite in latest:
            continue  # newest first: the first seen is the latest
        metrics = {
            str(k): float(v)
            for k, v in dict(run.metrics).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        latest[suite] = Evaluation(suite, str(run.run_id), _started(run), metrics)
    return latest


# -- the register ----------------------------------------------------------------------------


def _approval_measures(steps: Sequence[Any], operators: Sequence[str]) -> list[str]:
    out = []
    for step in steps:
        if isinstance(step, ApproveStep):
            escalate = f", escalating to {step.escalate_to}" if step.escalate_to else ""
            out.append(
                f"approval step {step.id!r}: {step.required} of group {step.group}{escalate};"
                " the requester can never approve their own run"
            )
    out.append(
        f"operators ({', '.join(operators)}) can pause runs, override step outputs and set a"
        " kill switch; every step is an audit event"
    )
    return out


def build_inventory(ws: Workspace, runs: Sequence[Any] | None = None) -> list[AISystem]:
    """Every AI system in use, with its gaps. `runs`: tracked evaluation runs (default: read)."""
    config = ws.config
    operator = InventoryStore(ws.home).read()
    latest = latest_by_suite(tracked_runs(config) if runs is None else runs)
    systems: list[AISystem] = []

    def add(system: AISystem) -> None:
        suites = system.operator.eval_suites or system.facts.pop("_suites", ())
        system.facts.pop("_suites", None)
        system.evaluations = [latest[s] for s in suites if s in latest]
        systems.append(system)

    try:
        models = ModelRegistry(ws.home).entries()
    except RegistryError:
        models = []
    for m in models:
        add(
            AISystem(
                f"model:{m.name}",
                "model",
                m.name,
                {
                    "model_kind": m.kind,
                    "sha256": m.sha256,
                    "size_bytes": m.size_bytes,
                    "licence": None if m.licence == "unknown" else m.licence,
                    "context_length": m.context_length,
                    "languages": list(m.languages),
                    "quantisation": m.quantisation,
                    "registered_at": m.added_at or None,
                },
                operator.get(f"model:{m.name}", OperatorFields()),
            )
        )
    emb = config.embedding
    add(
        AISystem(
            f"embedding:{emb.name}",
            "model",
            emb.name,
            {
                "model_kind": "embedding",
                "path": str(emb.path) if emb.path else None,
                "languages": list(emb.languages),
                "sha256": None,
                "licence": None,
            },
            operator.get(f"embedding:{emb.name}", OperatorFields()),
        )
    )
    for ep in config.endpoints:
        add(
            AISystem(
                f"endpoint:{ep.name}",
                "endpoint",
                ep.name,
                {
                    "endpoint_kind": ep.kind,
                    "model": ep.model,
                    "jurisdiction": ep.jurisdiction,
                    "hosting": ep.hosting,
                    "max_classification": ep.max_classification,
                    "pii": ep.pii,
                    "legal_basis": ep.legal_basis or None,
                    "base_url": ep.base_url,
                },
                operator.get(f"endpoint:{ep.name}", OperatorFields()),
            )
        )
    add(
        AISystem(
            ASSISTANT_ID,
            "assistant",
            "Cited answers and search",
            {
                "answer_endpoint": config.answer.endpoint or "extractive (no model)",
                "sources": [s.name for s in config.sources],
                "_suites": ASSISTANT_SUITES,
            },
            operator.get(ASSISTANT_ID, OperatorFields()),
            oversight=[
                "every answer shows its cited sources, the endpoint and an AI-generated flag",
                "users rate answers (feedback is logged)",
                "routing refuses data a policy forbids for an endpoint (audited)",
            ],
        )
    )
    errors: list[DefinitionError] = []
    extra = config.flows.definitions
    workflows = load_all(ws.home, config.resolve(extra) if extra else None, errors)
    for name, (wf, path) in sorted(workflows.items()):
        classifies = any(isinstance(s, ClassifyStep) for s in wf.steps)
        add(
            AISystem(
                f"workflow:{name}",
                "workflow",
                name,
                {
                    "description": wf.description or None,
                    "definition": str(path),
                    "steps": [f"{s.id} ({s.kind})" for s in wf.steps],
                    "actions": list(wf.actions),
                    "access": list(wf.access),
                    "_suites": CLASSIFIER_SUITES if classifies else (),
                },
                operator.get(f"workflow:{name}", OperatorFields()),
                oversight=_approval_measures(wf.steps, config.flows.operators),
            )
        )
    for s in systems:
        s.gaps = gaps_of(s)
    return systems


def gaps_of(system: AISystem) -> list[str]:
    """The required fields nobody has stated for this kind of system."""
    op = system.operator
    gaps: list[str] = []
    for name in REQUIRED.get(system.kind, ()):
        if name == "evaluation":
            if not system.evaluations:
                gaps.append("evaluation: no tracked evaluation run (run `sovra eval run`)")
        elif name == "licence":
            if not (system.facts.get("licence") or op.licence):
                gaps.append(f"licence: unknown (sovra inventory set {system.id} --licence ...)")
        elif name == "legal_basis":
            if system.facts.get("hosting") != "on_prem" and not system.facts.get("legal_basis"):
                gaps.append(
                    "legal_basis: data leaves the premises without a stated legal basis"
                    " (set legal_basis on the endpoint in sovra.toml)"
                )
        elif not getattr(op, name):
            flag = "--owner" if name == "owners" else "--" + name.replace("_", "-")
            gaps.append(f"{name}: not set (sovra inventory set {system.id} {flag} ...)")
    if system.kind == "model" and not system.facts.get("sha256"):
        gaps.append("sha256: the model is not in the registry (register it with `sovra model add`)")
    return gaps


def find_system(systems: Sequence[AISystem], system_id: str) -> AISystem:
    for s in systems:
        if s.id == system_id:
            return s
    known = ", ".join(s.id for s in systems)
    raise UnknownSystem(f"no AI system {system_id!r} is in use (known: {known})")


def set_fields(
    ws: Workspace, system_id: str, changes: Mapping[str, Any], *, actor: str = "cli:inventory"
) -> AISystem:
    """Record the operator's statements about one system (an audit event names the fields)."""
    from datetime import UTC, datetime

    unknown = sorted(set(changes) - set(OPERATOR_FIELDS))
    if unknown:
        raise InventoryError(
            f"unknown inventory field {', '.join(unknown)} (fields: {', '.join(OPERATOR_FIELDS)})"
        )
    risk = changes.get("risk_class")
    if risk and risk not in RISK_CLASSES:
        raise InventoryError(
            f"risk class {risk!r} is not an AI Act category; use one of {', '.join(RISK_CLASSES)}"
        )
    systems = build_inventory(ws)
    find_system(systems, system_id)
    store = InventoryStore(ws.home)
    current = store.read()
    before = current.get(system_id, OperatorFields())
    now = datetime.now(UTC).isoformat(timespec="seconds")
    merged = before.model_copy(update={**changes, "updated_at": now})
    current[system_id] = OperatorFields.model_validate(merged.model_dump())
    store.write(current)
    fields: list[JsonValue] = [*sorted(changes)]
    ws.audit.append(
        AuditEvent(
            actor=actor,
            action="inventory.set",
            resources=(),
            details={"system": system_id, "fields": fields},
        )
    )
    return find_system(build_inventory(ws), system_id)
