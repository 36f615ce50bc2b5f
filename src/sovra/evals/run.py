"""`sovra eval run`: the evaluations that apply, as one tracked run (see `sovra.evals.tracking`).

This module turns each evaluation's report into flat metrics (`<part>.<set>.<method>.<metric>`)
and per-query rows, describes the configuration under test as run parameters, and evaluates
an accepted test set through callables the caller wires to the workspace (so the questions go
through the permission path as the acting principal).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sovra import __version__
from sovra.config import Config
from sovra.evals.answer_eval import token_f1
from sovra.evals.retrieval_eval import ndcg_at
from sovra.evals.testset import Testset

Metrics = dict[str, float]


@dataclass
class PartResult:
    """One evaluation of a run: its metrics and per-query rows (the artefact)."""

    name: str
    metrics: Metrics = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _put(out: Metrics, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if math.isfinite(float(value)):
        out[key] = float(value)


def flatten(prefix: str, value: Any, out: Metrics | None = None) -> Metrics:
    """Numbers of a nested dict/dataclass as dotted metric names (lists are skipped)."""
    out = {} if out is None else out
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, Mapping):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        _put(out, prefix, value)
    return out


def retrieval_metrics(reports: Sequence[Any]) -> Metrics:
    out: Metrics = {}
    for r in reports:
        flatten(f"retrieval.{r.collection}", r.methods, out)
    return out


def answer_metrics(reports: Sequence[Any]) -> Metrics:
    out: Metrics = {}
    for r in reports:
        flatten(f"answers.{r.language}", r.methods, out)
    return out


def triage_metrics(report: Any) -> Metrics:
    out: Metrics = {}
    for t in report.targets:
        flatten(f"triage.{t.target}", t.methods, out)
    return out


def pii_metrics(result: Mapping[str, Any]) -> Metrics:
    out: Metrics = {}
    ours = result.get("sovra", {})
    flatten("pii.overall", ours.get("overall", {}), out)
    flatten("pii.checksum_identifiers", ours.get("checksum_identifiers", {}), out)
    flatten("pii.by_entity", ours.get("by_entity", {}), out)
    return out


def run_params(config: Config, *, suites: Sequence[str], quick: bool) -> dict[str, str]:
    """What the run measured: sovra version, models (sha256), endpoints, index and answer
    settings, the policy set's hash."""
    from sovra.models.registry import ModelRegistry
    from sovra.policy.engine import PolicyEngine

    p: dict[str, str] = {
        "sovra_version": __version__,
        "suites": ",".join(suites),
        "quick": str(quick).lower(),
        "embedding.name": config.embedding.name,
        "embedding.path": str(config.embedding.path or "(packaged)"),
        "index.backend": config.index.backend,
        "search.k": str(config.search.k),
        "search.candidates": str(config.search.candidates),
        "search.fusion": config.search.fusion,
        "search.rrf_k": str(config.search.rrf_k),
        "answer.endpoint": config.answer.endpoint or "(extractive)",
        "answer.k": str(config.answer.k),
        "answer.min_score": str(config.answer.min_score),
        "answer.min_score_lexical": str(config.answer.min_score_lexical),
        "routing.preference": config.routing.preference,
    }
    try:
        p["policy_set"] = PolicyEngine.for_home(config.home).version
    except Exception as exc:  # a broken policy set is recorded, not hidden
        p["policy_set"] = f"unavailable: {type(exc).__name__}"
    for entry in ModelRegistry(config.home).entries():
        p[f"model.{entry.name}.sha256"] = entry.sha256
        p[f"model.{entry.name}.kind"] = str(entry.kind)
    for ep in config.endpoints:
        p[f"endpoint.{ep.name}"] = (
            f"{ep.kind} model={ep.model} hosting={ep.hosting} jurisdiction={ep.jurisdiction}"
        )
    return p


@dataclass(frozen=True)
class Answered:
    text: str
    found: bool
    cited: tuple[str, ...]


def evaluate_testset(
    testset: Testset,
    search: Callable[[str], Sequence[str]],
    ask: Callable[[str], Answered] | None = None,
    *,
    k: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> PartResult:
    """hit@1/hit@k/MRR/nDCG@k of each accepted item's passage among `search(question)` (chunk
    ids, best first) and, with `ask`, token F1 of the answer and whether it cites the passage."""
    items = testset.accepted()
    part = PartResult(f"testset.{testset.name}")
    if not items:
        part.notes.append(f"test set {testset.name!r} has no accepted items; review it first")
        return part
    sums = {"hit1": 0.0, f"hit{k}": 0.0, "mrr": 0.0, f"ndcg{k}": 0.0, "f1": 0.0, "cites": 0.0}
    found = 0
    for n, item in enumerate(items):
        ranked = list(search(item.question))[:k]
        rank = ranked.index(item.chunk_id) + 1 if item.chunk_id in ranked else None
        row: dict[str, Any] = {"id": item.id, "chunk_id": item.chunk_id, "rank": rank}
        sums["hit1"] += rank == 1
        sums[f"hit{k}"] += rank is not None
        sums["mrr"] += 1 / rank if rank else 0.0
        sums[f"ndcg{k}"] += ndcg_at(ranked, {item.chunk_id: 1}, k)
        if ask is not None:
            answer = ask(item.question)
            f1 = token_f1(answer.text, item.answer) if answer.found else 0.0
            sums["f1"] += f1
            sums["cites"] += item.chunk_id in answer.cited
            found += answer.found
            row.update(f1=round(f1, 4), found=answer.found, cites=item.chunk_id in answer.cited)
        part.rows.append(row)
        if progress:
            progress(n + 1, len(items))
    total = len(items)
    prefix = part.name
    for key in ("hit1", f"hit{k}", "mrr", f"ndcg{k}"):
        part.metrics[f"{prefix}.retrieval.{key}"] = sums[key] / total
    if ask is not None:
        part.metrics[f"{prefix}.answers.f1"] = sums["f1"] / total
        part.metrics[f"{prefix}.answers.cites_passage"] = sums["cites"] / total
        part.metrics[f"{prefix}.answers.found_rate"] = found / total
    part.metrics[f"{prefix}.questions"] = total
    return part
