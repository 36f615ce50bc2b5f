"""The durable runner: each workflow step is a DBOS step inside a run *segment* (a DBOS workflow).

A segment runs steps from a start index until the run completes, fails, waits for an approval
or is paused (kill switch / operator). Each step's result is checkpointed by DBOS, so after a
`kill -9` the next process that launches the engine replays the segment: finished steps return
their recorded result and the interrupted step runs again. An `act` step always passes the
idempotency key `<run id>:<step id>`, so an adapter that already acted returns its first result
instead of acting twice. Waiting for a person is never an open DBOS workflow: the segment ends,
and the approval starts the next segment (`<run id>/<n>`) — so no process has to stay up.

DBOS is a process-global singleton; `Engine.launch` owns it for the life of one `Flows`, and a
lock file makes sure only one process at a time executes (and recovers) runs in a data dir. On
a shared PostgreSQL system database (`[workspace] database_url`) every replica's DBOS has the
same executor id and recovers every pending segment at launch, one another replica may be
running; so a session advisory lock there extends "one process at a time" to all replicas.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from dbos import DBOS, SetWorkflowID
from sqlalchemy import Connection, text

from sovra.answer import readable
from sovra.domain import Principal, QueryOptions
from sovra.flows.base import ActionAdapter, ActionError, Classifier, FlowError, Host
from sovra.flows.definition import (
    ActStep,
    ApproveStep,
    BranchStep,
    ClassifyStep,
    DraftStep,
    ExtractStep,
    RetrieveStep,
    SummaryStep,
    Workflow,
    render,
)
from sovra.flows.store import FlowStore, Run
from sovra.storage import engine_for, open_private, private_files

NO_DRAFT = "no draft: nothing relevant found"
"""Why a draft step produced no reply: no retrieved passage held a sentence above the
answerer's calibrated evidence threshold, so there is nothing to quote."""

if TYPE_CHECKING:
    from sovra.config import Config

RUNNER_LOCK = "sovra_flows.runner"
"""The advisory lock (on a PostgreSQL system database) held while a process executes runs."""

APP_VERSION = "sovra-flows-1"
"""Fixed so a run started by one build is recovered by the next (segments only call our steps)."""

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def _hold_runner_lock(url: str, deadline: float) -> Connection:
    """A connection holding RUNNER_LOCK on the shared database, waited for until `deadline`."""
    conn = engine_for(url).connect()
    try:
        while True:
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(hashtext(:n))"), {"n": RUNNER_LOCK}
            ).scalar_one()
            conn.commit()  # a session lock: it outlives the transaction, which must not idle
            if got:
                return conn
            if time.monotonic() > deadline:
                raise FlowError(
                    "another sovra process (this or another replica) is running flows on the"
                    " shared database; wait for it, or use the server's API"
                )
            time.sleep(0.2)
    except BaseException:
        conn.close()
        raise


class Engine:
    """Executes steps for `Flows`; the DBOS functions below call the engine that is launched."""

    def __init__(
        self,
        config: Config,
        host: Host,
        store: FlowStore,
        *,
        clock: Clock,
        sleep: Sleep = time.sleep,
        adapters: Mapping[str, ActionAdapter] | None = None,
        classifiers: Mapping[str, Classifier] | None = None,
    ) -> None:
        self.config = config
        self.ws = host
        self.store = store
        self.clock = clock
        self.sleep = sleep
        self._adapters = dict(adapters) if adapters is not None else None
        self._classifiers = dict(classifiers or {})
        self._lock: IO[str] | None = None
        self._shared_lock: Connection | None = None

    def sha(self, value: Any) -> str:
        """The installation's keyed digest of a JSON value (inputs, outputs, reasons): it
        identifies what was seen without letting a guess be confirmed from the audit log."""
        return self.ws.digest(json.dumps(value, sort_keys=True, default=str))

    def approved_digest(self, run: Run, wf: Workflow, approval_index: int) -> str:
        """The digest of what an approval step's approvers are shown: the run's inputs and
        the outputs of every step before it (as overridden, if it was)."""
        before = {s.id for s in wf.steps[:approval_index]}
        outputs = {
            sid: rec.output
            for sid, rec in self.store.steps(run.id).items()
            if sid in before and rec.status in ("done", "overridden")
        }
        return self.sha({"inputs": run.inputs, "steps": outputs})

    def reopen_approval(self, run: Run, wf: Workflow, step: ApproveStep, why: str) -> None:
        """Send the run back to `step` for a new round: votes of earlier rounds, cast on
        other outputs, no longer count."""
        approval = self.store.approval(run.id, step.id)
        assert approval is not None
        hours = approval.expiry_hours
        digest = self.approved_digest(run, wf, wf.step_index(step.id))
        with self.store.transaction():
            self.store.update_approval(
                run.id,
                step.id,
                status="open",
                round=approval.round + 1,
                outputs_sha256=digest,
                expires_at=self.clock() + hours * 3600,
            )
            self.store.set_step(run.id, step.id, "waiting")
            self.store.update_run(
                run.id,
                status="waiting_approval",
                step_index=wf.step_index(step.id),
                error=None,
            )
        self.audit(
            run.requester,
            "flow.approval.request",
            run,
            step.id,
            outcome="reopened",
            extra={
                "why": why,
                "round": approval.round + 1,
                "outputs_sha256": digest,
                "previous_sha256": approval.outputs_sha256,
            },
        )

    def stale_approval(
        self, run: Run, wf: Workflow, index: int, *, status: str = "approved"
    ) -> ApproveStep | None:
        """The first approval (given, or with `status="open"` being voted on) before step
        `index` whose outputs have changed since it was asked for."""
        for i, step in enumerate(wf.steps[:index]):
            if not isinstance(step, ApproveStep):
                continue
            approval = self.store.approval(run.id, step.id)
            if approval is None or approval.status != status:
                continue
            if approval.outputs_sha256 != self.approved_digest(run, wf, i):
                return step
        return None

    # -- process lifecycle --------------------------------------------------------------------

    def launch(self, *, wait_s: float = 60.0) -> None:
        global _ENGINE
        home = self.ws.home
        lock = open_private(home / "flows.lock")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise FlowError(
                        f"another sovra process is running flows in {home} (the server, or a"
                        " `sovra flow` command); wait for it, or use the server's API"
                    ) from None
                time.sleep(0.2)
        self._lock = lock
        url = (
            self.config.flows.database_url
            or self.config.shared_database_url()
            or f"sqlite:///{home / 'flows.db'}"
        )
        if url.startswith(("postgresql", "postgres:")):
            try:
                self._shared_lock = _hold_runner_lock(url, deadline)
            except BaseException:
                self.close()
                raise
        _quiet_dbos_console()
        if _ENGINE is not None:
            DBOS.destroy()
        _ENGINE = self
        with private_files():  # DBOS creates its SQLite database (and sidecars) itself
            DBOS(
                config={
                    "name": "sovra-flows",
                    "system_database_url": url,
                    "application_version": APP_VERSION,
                    "log_level": os.environ.get("SOVRA_DBOS_LOG_LEVEL", "ERROR"),
                }
            )
            DBOS.launch()

    def close(self) -> None:
        global _ENGINE
        if _ENGINE is self:
            DBOS.destroy()
            _ENGINE = None
        if self._shared_lock is not None:
            conn, self._shared_lock = self._shared_lock, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": RUNNER_LOCK})
                conn.commit()
            except Exception:
                # Never back into the pool still holding it: a dropped session releases it.
                conn.invalidate()
            finally:
                conn.close()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def recover(self) -> list[str]:
        """Finish what a killed process left: DBOS-pending segments, and runs marked running
        whose segment never started (killed between the store update and the DBOS start)."""
        pending = DBOS.list_workflows(
            status=["PENDING", "ENQUEUED"], name="sovra_flow_segment", load_input=False
        )
        done: list[str] = []
        for wf in pending:
            DBOS.retrieve_workflow(wf.workflow_id).get_result()
            done.append(wf.workflow_id)
        for run in self.store.runs(status="running", limit=10_000):
            wid = f"{run.id}/{run.segment}"
            if wid not in done:
                self.run_segment(run)
                done.append(wid)
        return done

    def run_segment(self, run: Run) -> str:
        """Start (or join) the run's current segment and wait for it: 'completed', 'failed',
        'waiting_approval' or 'paused'."""
        with SetWorkflowID(f"{run.id}/{run.segment}"):
            handle = DBOS.start_workflow(_segment, run.id, run.step_index, run.segment)
        return str(handle.get_result())

    # -- adapters and classifiers -------------------------------------------------------------

    def adapter(self, name: str) -> ActionAdapter:
        if self._adapters is None:
            self._adapters = dict(self.ws.action_adapters())
        adapter = self._adapters.get(name)
        if adapter is None:
            raise FlowError(
                f"no action adapter {name!r} (known: {', '.join(sorted(self._adapters))})"
            )
        return adapter

    def classifier(self, step: ClassifyStep) -> Classifier:
        key = step.classifier or "labels:" + "|".join(step.labels or ())
        if key in self._classifiers:
            return self._classifiers[key]
        try:
            from sovra.flows import classify
        except ImportError:
            raise FlowError("the classifiers (sovra.flows.classify) are not installed") from None
        clf: Classifier
        if step.classifier is not None:
            manifest = classify.read_manifest(self.ws.home, step.classifier)
            # Load the embedding model only for a classifier trained on embeddings.
            embedder = self.ws.embedder if manifest.get("embedder") else None
            clf = classify.load_classifier(self.ws.home, step.classifier, embedder)
        else:
            clf = classify.ZeroShotClassifier(list(step.labels or ()), self.ws.embedder)
        self._classifiers[key] = clf
        return clf

    # -- steps --------------------------------------------------------------------------------

    def context(self, run: Run) -> dict[str, Any]:
        outputs = {
            sid: rec.output
            for sid, rec in self.store.steps(run.id).items()
            if rec.status in ("done", "overridden")
        }
        return {
            "input": run.inputs,
            "steps": outputs,
            "run": {"id": run.id, "requester": run.requester, "workflow": run.workflow},
        }

    def _requester(self, run: Run, action: str, text: str) -> Principal:
        """The run's requester as the directory knows them now (a revoked membership applies
        to the next step); an unknown requester is denied and the denial logged."""
        return self.ws.principal_for(run.requester, action, text)

    def audit(
        self,
        user: str,
        action: str,
        run: Run,
        step_id: str | None,
        *,
        outcome: str = "ok",
        decision: str = "allow",
        chunks: list[Any] | None = None,
        endpoint: str | None = None,
        extra: dict[str, Any] | None = None,
        personal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        details: dict[str, Any] = {"run_id": run.id, "workflow": run.workflow}
        if step_id is not None:
            details["step_id"] = step_id
        details.update(extra or {})
        return self.ws.record(
            user,
            action,
            chunks or [],
            decision=decision,
            outcome=outcome,
            endpoint=endpoint,
            details=details,
            personal=personal,
        )

    def gate(self, run_id: str, index: int, segment: int) -> str:
        """Before each step: 'go', 'paused' (operator or kill switch) or 'completed'."""
        run = self.store.run(run_id)
        if run.segment != segment:
            return "superseded"
        wf = Workflow.from_json(run.definition)
        if index >= len(wf.steps):
            self.store.update_run(run_id, status="completed", step_index=index, error=None)
            self.audit(run.requester, "flow.run", run, None, outcome="completed")
            return "completed"
        switch = self.store.switch(run.workflow)
        reason = None
        if run.paused:
            reason = "paused by an operator"
        elif switch is not None:
            scope = "all workflows" if switch["scope"] == "*" else f"workflow {switch['scope']}"
            reason = f"kill switch on for {scope} (by {switch['set_by']}: {switch['reason']})"
        if reason:
            self.store.update_run(run_id, status="paused", step_index=index, error=reason)
            self.audit(run.requester, "flow.run", run, wf.steps[index].id, outcome="paused")
            return "paused"
        self.store.update_run(run_id, step_index=index)
        return "go"

    def execute(self, run_id: str, index: int, segment: int) -> dict[str, Any]:
        """Run one step; returns {'next': index} or {'stop': status}. Never raises for a step's
        own failure: the run is marked failed, with the error, and the failure is logged."""
        run = self.store.run(run_id)
        if run.segment != segment:  # a replayed old segment: the run has moved on without it
            return {"stop": "superseded"}
        wf = Workflow.from_json(run.definition)
        step = wf.steps[index]
        ctx = self.context(run)
        chunks: list[Any] = []
        endpoint: str | None = None
        inputs: Any = None
        try:
            if isinstance(step, ApproveStep):
                return self._open_approval(run, step)
            if isinstance(step, BranchStep):
                values = [render(c.value, ctx) for c in step.conditions]
                inputs = values
                matched = step.decide(values)
                target = step.then if matched else step.else_
                nxt = wf.step_index(target) if target else index + 1
                output: dict[str, Any] = {
                    "matched": matched,
                    "taken": wf.steps[nxt].id if nxt < len(wf.steps) else None,
                }
                for skipped in wf.steps[index + 1 : nxt]:
                    self.store.set_step(run.id, skipped.id, "skipped")
                self._finish(run, step, inputs, output, chunks, endpoint)
                return {"next": nxt}
            if isinstance(step, RetrieveStep):
                inputs = {
                    "query": render(step.query, ctx),
                    "k": step.k,
                    "sources": step.sources,
                    "max_classification": step.max_classification,
                }
                query = str(inputs["query"])
                result = self.ws.search(
                    self._requester(run, "search", query),
                    query,
                    QueryOptions(
                        k=step.k,
                        sources=tuple(step.sources) if step.sources else None,
                        max_classification=step.max_classification,
                    ),
                )
                chunks = [h.chunk for h in result.hits]
                passages = [
                    {
                        "chunk_id": h.chunk.id,
                        "document_id": h.chunk.document_id,
                        "title": h.chunk.title,
                        "uri": h.chunk.uri,
                        "source": h.chunk.source,
                        "score": round(h.score, 4),
                        "text": h.chunk.text[:800],
                    }
                    for h in result.hits
                ]
                output = {
                    "passages": passages,
                    "count": len(passages),
                    "chunk_ids": [p["chunk_id"] for p in passages],
                    "text": "\n\n".join(str(p["text"]) for p in passages),
                }
            elif isinstance(step, ClassifyStep):
                text = str(render(step.text, ctx))
                inputs = {"text": text}
                pred = self.classifier(step).predict([text])[0]
                names = step.label_names
                name = label_name(pred.label, names)
                output = {
                    "label": pred.label,
                    "name": name,
                    "display": (
                        name
                        if name in (pred.label, f"code {pred.label}")
                        else f"{name} ({pred.label})"
                    ),
                    "confidence": round(float(pred.confidence), 4),
                    "scores": {k: round(float(v), 4) for k, v in pred.scores.items()},
                    "names": {k: label_name(k, names) for k in pred.scores},
                }
            elif isinstance(step, SummaryStep):
                title = str(render(step.headline, ctx) or "")
                text = str(render(step.text, ctx) or "")
                inputs = {"headline": title, "text": text}
                output = {"text": summarize(title, text, step.min_title_words, step.max_words)}
            elif isinstance(step, ExtractStep):
                text = str(render(step.text, ctx))
                inputs = {"text": text}
                output = _extract(step, text)
            elif isinstance(step, DraftStep):
                question = str(render(step.question, ctx))
                given: tuple[str, ...] | None = None
                if step.passages is not None:
                    found_ids = render(step.passages, ctx)
                    given = tuple(str(c) for c in found_ids or ())
                inputs = {
                    "question": question,
                    "passages": given,
                    "sources": step.sources,
                    "max_classification": step.max_classification,
                }
                answer = None
                asker = self._requester(run, "ask", question)
                for event in self.ws.ask(
                    asker,
                    question,
                    QueryOptions(
                        endpoint=step.endpoint,
                        extractive=step.extractive,
                        sources=tuple(step.sources) if step.sources else None,
                        max_classification=step.max_classification,
                        context=self._input_chunks(run, step, asker),
                        passages=given,
                    ),
                ):
                    if event.answer is not None:
                        answer = event.answer
                assert answer is not None
                endpoint = answer.endpoint
                relevant = (
                    answer.found
                    and bool(answer.citations)
                    and (step.min_evidence is None or answer.evidence >= step.min_evidence)
                )
                output = {
                    # Never the not-found sentence as a reply: no draft at all, and a person
                    # decides (or, without `nothing_found`, the run fails below).
                    # Plain text: the reply goes into mail and tickets, not a Markdown view.
                    "text": readable(answer.text) if relevant else "",
                    "found": relevant,
                    "reason": "" if relevant else NO_DRAFT,
                    "evidence": answer.evidence,
                    "provenance": (
                        f"Drafted by sovra ({answer.generation}"
                        + (f", {answer.endpoint}" if answer.endpoint != answer.generation else "")
                        + ")"
                        if relevant
                        else ""
                    ),
                    "edit": None,
                    "citations": [
                        {
                            "number": c.number,
                            "chunk_id": c.chunk_id,
                            "title": c.title,
                            "uri": c.uri,
                            "quote": c.quote,
                        }
                        for c in answer.citations
                    ],
                    "sources": "\n".join(
                        f"[{c.number}] {_cited(c.title, c.heading_path)} {c.uri}".rstrip()
                        for c in answer.citations
                    ),
                    "endpoint": answer.endpoint,
                    "model": answer.model,
                    "generation": answer.generation,
                    "hosting": answer.hosting,
                    "jurisdiction": answer.jurisdiction,
                }
                if not relevant:
                    return self._no_draft(run, wf, step, index, inputs, output, chunks, endpoint)
            else:
                assert isinstance(step, ActStep)
                stale = self.stale_approval(run, wf, index)
                if stale is not None:  # an override changed what was approved: ask again
                    self.reopen_approval(run, wf, stale, "outputs_changed")
                    return {"stop": "waiting_approval"}
                params = render(step.params, ctx)
                inputs = params
                output = self._act(run, step, params)
        except Exception as exc:  # a step's failure is the run's failure, shown and logged
            message = f"step {step.id} ({step.kind}): {exc}"
            prev = self.store.steps(run.id).get(step.id)
            self.store.set_step(
                run.id,
                step.id,
                "failed",
                error=str(exc),
                attempts=(prev.attempts if prev else 0) + 1 if step.kind != "act" else None,
            )
            self.store.update_run(run.id, status="failed", step_index=index, error=message)
            self.audit(
                run.requester,
                f"flow.{step.kind}",
                run,
                step.id,
                outcome="failed",
                extra={"inputs_sha256": self.sha(inputs), "error": type(exc).__name__},
            )
            self.audit(run.requester, "flow.run", run, step.id, outcome="failed")
            return {"stop": "failed"}
        self._finish(run, step, inputs, output, chunks, endpoint)
        return {"next": index + 1}

    def _no_draft(
        self,
        run: Run,
        wf: Workflow,
        step: DraftStep,
        index: int,
        inputs: Any,
        output: dict[str, Any],
        chunks: list[Any],
        endpoint: str | None,
    ) -> dict[str, Any]:
        """Nothing relevant to quote: hand the run to the person of `nothing_found` (steps in
        between are skipped, so no branch can route an empty reply past them)."""
        if step.nothing_found is None:
            raise FlowError(
                f"{NO_DRAFT}; add `nothing_found: <approve step>` to step {step.id} so a"
                " person writes the reply"
            )
        self.store.set_step(run.id, step.id, "done", output)
        self.audit(
            run.requester,
            "flow.draft",
            run,
            step.id,
            outcome="no_draft",
            chunks=chunks,
            endpoint=endpoint,
            extra={
                "inputs_sha256": self.sha(inputs),
                "output_sha256": self.sha(output),
                "handoff": step.nothing_found,
            },
        )
        target = wf.step_index(step.nothing_found)
        for skipped in wf.steps[index + 1 : target]:
            self.store.set_step(run.id, skipped.id, "skipped")
        return {"next": target}

    def _input_chunks(self, run: Run, step: DraftStep, asker: Principal) -> tuple[Any, ...]:
        """The chunks of the documents the run's inputs carry, read again as the requester
        (access revoked since the trigger fired applies now). A draft capped below their
        classification refuses: the prompt would hold what the cap keeps out."""
        chunks: list[Any] = []
        for doc in run.labels.get("documents", []):
            view = self.ws.document(asker, str(doc["id"]))
            if view is None:
                raise FlowError(
                    f"input document {doc['id']} is not readable by {asker.id} (any more)"
                )
            chunks.extend(view.chunks)
        if chunks and step.max_classification is not None:
            scale = self.config.scale
            label = scale.strictest([c.classification for c in chunks])
            if scale.rank(label) > scale.rank(step.max_classification):
                raise FlowError(
                    f"the inputs are {label}; this draft is capped at"
                    f" max_classification = {step.max_classification}"
                )
        return tuple(chunks)

    def _finish(
        self,
        run: Run,
        step: Any,
        inputs: Any,
        output: Any,
        chunks: list[Any],
        endpoint: str | None,
    ) -> None:
        self.store.set_step(run.id, step.id, "done", output)
        self.audit(
            run.requester,
            f"flow.{step.kind}",
            run,
            step.id,
            chunks=chunks,
            endpoint=endpoint,
            extra={"inputs_sha256": self.sha(inputs), "output_sha256": self.sha(output)},
        )

    def _open_approval(self, run: Run, step: ApproveStep) -> dict[str, Any]:
        hours = step.expiry_hours or self.config.flows.approval_expiry_hours
        wf = Workflow.from_json(run.definition)
        digest = self.approved_digest(run, wf, wf.step_index(step.id))
        self.store.open_approval(
            run.id,
            step.id,
            step.group,
            step.required,
            step.escalate_to,
            hours,
            self.clock() + hours * 3600,
            digest,
        )
        self.store.set_step(run.id, step.id, "waiting")
        self.store.update_run(run.id, status="waiting_approval", error=None)
        self.audit(
            run.requester,
            "flow.approval.request",
            run,
            step.id,
            outcome="waiting",
            extra={
                "group": step.group,
                "required": step.required,
                "expiry_hours": hours,
                "outputs_sha256": digest,
            },
        )
        return {"stop": "waiting_approval"}

    def _act(self, run: Run, step: ActStep, params: Any) -> dict[str, Any]:
        wf = Workflow.from_json(run.definition)
        if step.adapter not in wf.actions:  # checked on load too; unknown means deny
            raise FlowError(f"adapter {step.adapter!r} is not allowed by workflow {wf.name!r}")
        adapter = self.adapter(step.adapter)
        key = f"{run.id}:{step.id}"
        attempts_max = self.config.flows.action_max_attempts
        base = self.config.flows.action_backoff_seconds
        attempt = 0
        while True:
            attempt += 1
            self.store.set_step(run.id, step.id, "running", attempts=attempt)
            try:
                result = adapter.execute(params, idempotency_key=key)
                break
            except ActionError as exc:
                last = not exc.retryable or attempt >= attempts_max
                self.audit(
                    run.requester,
                    "flow.act.attempt",
                    run,
                    step.id,
                    outcome="failed" if last else "retrying",
                    extra={
                        "adapter": step.adapter,
                        "attempt": attempt,
                        "retryable": exc.retryable,
                        "error": str(exc)[:300],
                    },
                )
                if last:
                    raise ActionError(
                        f"{exc} (after {attempt} attempt{'s' if attempt > 1 else ''})",
                        retryable=exc.retryable,
                    ) from exc
                self.sleep(min(60.0, base * 2 ** (attempt - 1)))
        return {
            "adapter": result.adapter,
            "outcome": dict(result.outcome),
            "replayed": result.replayed,
            "changes": sorted(adapter.changes),
            "idempotency_key": key,
        }


class _CurrentStderr(logging.Handler):
    """DBOS's own console handler keeps the `sys.stderr` of its first launch; in one process
    that runs several commands (tests, the server) that stream may be closed by now."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a log line must never break a run
            self.handleError(record)


def _quiet_dbos_console() -> None:
    logger = logging.getLogger("dbos")
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.name = "__dbos_console_log_handler__"  # DBOS then adds no handler of its own
        handler.setFormatter(logging.Formatter("%(levelname)s dbos: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _cited(title: str, heading_path: tuple[str, ...]) -> str:
    """A cited passage as people find it: the title and, below it, its section."""
    section = heading_path[-1] if heading_path and heading_path[-1] != title else ""
    return f"{title} › {section}" if section else title


def label_name(code: str, names: Mapping[str, str]) -> str:
    """A label's name for people: its mapped name, the label itself when it is a word, or
    `code <n>` for an unmapped numeric code (an approver must not read "4" as a score)."""
    if code in names and names[code].strip():
        return names[code].strip()
    return f"code {code}" if code.strip().lstrip("-").isdigit() else code


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_DIRECTED = re.compile(r"\S+@\S+\.\w+|https?://|www\.", re.IGNORECASE)


def summarize(title: str, text: str, min_title_words: int, max_words: int) -> str:
    """The ticket's problem in a few words: its title, or the text's first sentence that
    holds no address or link, capped at `max_words`."""
    title = " ".join(title.split())
    if len(title.split()) >= min_title_words:
        return " ".join(title.split()[:max_words])
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        if len(words) >= 2 and not _DIRECTED.search(sentence):
            return " ".join([*title.split(), *words][:max_words])
    return title


def _extract(step: ExtractStep, text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in step.fields.items():
        m = re.search(spec.pattern, text, flags=re.IGNORECASE | re.MULTILINE)
        raw = (m.group(1) if m.groups() else m.group(0)) if m else None
        value: Any = raw.strip() if isinstance(raw, str) else None
        if value is not None and spec.type in ("integer", "number"):
            try:
                value = int(value) if spec.type == "integer" else float(value)
            except ValueError:
                value = None
        if value is None and spec.required:
            raise FlowError(
                f"extract: required field {name!r} not found (pattern {spec.pattern!r})"
            )
        out[name] = value
    return out


# -- DBOS registrations (module level, so every process registers them before launch) --------

_ENGINE: Engine | None = None


def _engine() -> Engine:
    if _ENGINE is None:
        raise FlowError("the flows engine is not launched in this process")
    return _ENGINE


@DBOS.step(name="sovra_flow_gate")
def _gate(run_id: str, index: int, segment: int) -> str:
    return _engine().gate(run_id, index, segment)


@DBOS.step(name="sovra_flow_step")
def _step(run_id: str, index: int, segment: int) -> dict[str, Any]:
    return _engine().execute(run_id, index, segment)


@DBOS.workflow(name="sovra_flow_segment")
def _segment(run_id: str, start: int, segment: int) -> str:
    index = start
    while True:
        verdict = _gate(run_id, index, segment)
        if verdict != "go":
            return verdict
        result = _step(run_id, index, segment)
        if "stop" in result:
            return str(result["stop"])
        index = int(result["next"])
