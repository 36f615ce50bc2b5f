"""`Flows`: the one entry point the CLI and the server use to define, run, approve and operate runs.

Reading (list, show, runs) needs no DBOS; anything that executes steps launches the engine
(which first finishes what a killed process left behind) and releases it on `close()`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sovra.config import Config, ConfigError
from sovra.directory import DirectoryError
from sovra.domain import Principal
from sovra.flows.approvals import ApprovalRefused, NotAllowed, check_approver, check_operator
from sovra.flows.base import ActionAdapter, Classifier, FlowConflict, FlowError, FlowNotFound, Host
from sovra.flows.definition import (
    ActStep,
    ApproveStep,
    DefinitionError,
    Workflow,
    coerce_inputs,
    load_all,
)
from sovra.flows.runner import Clock, Engine, Sleep
from sovra.flows.store import FINAL, GLOBAL, Approval, FlowStore, Run


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class Flows:
    def __init__(
        self,
        config: Config,
        host: Host,
        *,
        owns_host: bool = False,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        adapters: Mapping[str, ActionAdapter] | None = None,
        classifiers: Mapping[str, Classifier] | None = None,
    ) -> None:
        self.config = config
        self._own_ws = owns_host
        self.ws = host
        self.home: Path = self.ws.home
        self.clock = clock
        self.store = FlowStore.in_home(self.home, config.shared_database_url())
        self.engine = Engine(
            config,
            self.ws,
            self.store,
            clock=clock,
            sleep=sleep,
            adapters=adapters,
            classifiers=classifiers,
        )
        self._launched = False

    def close(self) -> None:
        if self._launched:
            self.engine.close()
            self._launched = False
        self.store.close()
        if self._own_ws:
            self.ws.close()

    def __enter__(self) -> Flows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _engine(self) -> Engine:
        if not self._launched:
            self.engine.launch()
            self._launched = True
            self.engine.recover()
        return self.engine

    def recover(self) -> list[str]:
        """Launch the engine and finish every run a killed process left mid-segment."""
        if self._launched:
            return self.engine.recover()
        self.engine.launch()
        self._launched = True
        return self.engine.recover()

    # -- definitions --------------------------------------------------------------------------

    def workflows(
        self, errors: list[DefinitionError] | None = None
    ) -> dict[str, tuple[Workflow, Path]]:
        """Every workflow by name; with `errors`, broken files are listed there instead of
        stopping the others."""
        extra = self.config.flows.definitions
        return load_all(self.home, self.config.resolve(extra) if extra else None, errors)

    def workflow(self, name: str) -> Workflow:
        errors: list[DefinitionError] = []
        found = self.workflows(errors)
        for error in errors:
            if error.path is not None and error.path.stem == name:
                raise error
        if name not in found:
            raise FlowNotFound(
                f"no workflow {name!r} (known: {', '.join(sorted(found)) or 'none'}); add"
                f" {self.home / 'workflows' / (name + '.yaml')}"
            )
        return found[name][0]

    # -- runs ---------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        inputs: Mapping[str, Any],
        requester: str,
        *,
        labels: Mapping[str, Any] | None = None,
    ) -> Run:
        """Start a run as `requester` and execute it until it completes, fails, pauses or waits.

        `labels`: what the inputs carry (a trigger's documents); draft steps route on them."""
        wf = self.workflow(name)
        principal = self.ws.principal(requester)  # unknown users are refused, never a guest
        self._may_run(wf, principal)
        values = coerce_inputs(wf, inputs)
        run_id = "run-" + uuid.uuid4().hex[:12]
        self.store.create_run(run_id, wf.name, wf.to_json(), requester, values, dict(labels or {}))
        run = self.store.run(run_id)
        self.engine.audit(
            requester,
            "flow.run",
            run,
            None,
            outcome="started",
            extra={"inputs_sha256": self.engine.sha(values), "trigger": wf.trigger.kind},
        )
        self._engine().run_segment(run)
        return self.store.run(run_id)

    def run(self, run_id: str) -> Run:
        return self.store.run(run_id)

    def _may_run(self, wf: Workflow, principal: Principal) -> None:
        """The Cedar `run_workflow` decision on the workflow's `access`; a denial is logged."""
        from sovra.policy import PolicyEngine, Request, user_entity, workflow_entity

        decision = PolicyEngine.for_home(self.home).decide(
            Request(user_entity(principal), "run_workflow", workflow_entity(wf.name, wf.access))
        )
        if decision.allowed:
            return
        self.ws.record(
            principal.id,
            "flow.run",
            [],
            decision="deny",
            outcome="refused",
            details={"workflow": wf.name, "policy_ids": list(decision.policy_ids)},
        )
        advice = f" ({'; '.join(decision.advice)})" if decision.advice else ""
        raise NotAllowed(
            f"{principal.id} may not run workflow {wf.name!r}: policy"
            f" {', '.join(decision.policy_ids)} denies it{advice}; the workflow's `access:` is"
            f" {', '.join(wf.access) or 'empty (administrators only)'}"
        )

    def fire_triggers(self) -> tuple[list[Run], list[str]]:
        """Start the runs that `schedule` and `new_document` triggers call for now.

        Returns the runs started and one error line per workflow that could not start (the
        others still run)."""
        from sovra.flows.triggers import Cron

        now = self.clock()
        started: list[Run] = []
        broken: list[DefinitionError] = []
        workflows = self.workflows(broken)
        errors = [str(e) for e in broken]
        for wf, _ in workflows.values():
            trigger = wf.trigger
            try:
                if trigger.kind == "schedule":
                    assert trigger.cron and trigger.run_as
                    last = self.store.trigger_get(wf.name, "last_tick")
                    self.store.trigger_set(wf.name, "last_tick", repr(now))
                    if last is not None and Cron(trigger.cron).due(float(last), now):
                        started.append(self.start(wf.name, {}, trigger.run_as))
                elif trigger.kind == "new_document":
                    assert trigger.source and trigger.run_as
                    started.extend(self._new_documents(wf, trigger.source, trigger.run_as))
            except (FlowError, DirectoryError, ConfigError) as exc:
                errors.append(f"{wf.name}: {exc}")
        return started, errors

    def _new_documents(self, wf: Workflow, source: str, run_as: str) -> list[Run]:
        self.config.source(source)  # unknown source → clear error
        prefix = source + ":"
        ids = sorted(d for d in self.ws.index.document_ids() if d.startswith(prefix))
        seen = self.store.trigger_get(wf.name, "seen")
        self.store.trigger_set(wf.name, "seen", json.dumps(ids))
        if seen is None:  # first tick: remember what exists, start nothing
            return []
        runs = []
        principal = self.ws.principal(run_as)
        for doc_id in sorted(set(ids) - set(json.loads(seen))):
            # Read through the permission path as the run's principal: a document it may not
            # read never reaches the run (the same None whether missing or forbidden).
            view = self.ws.document(principal, doc_id)
            if view is None:
                self.ws.record(
                    principal.id,
                    "flow.trigger",
                    [],
                    decision="deny",
                    outcome="not_readable",
                    details={"workflow": wf.name, "document_sha256": self.engine.sha(doc_id)},
                )
                continue
            offered = {
                "document_id": doc_id,
                "source": source,
                "title": view.title,
                "text": "\n\n".join(c.text for c in view.chunks),
                "classification": view.classification,
            }
            inputs = {k: v for k, v in offered.items() if k in wf.inputs}
            label = self.config.scale.strictest([c.classification for c in view.chunks])
            offered["classification"] = label
            labels = {
                "documents": [{"id": doc_id, "classification": label}],
                "classification": label,
            }
            runs.append(self.start(wf.name, inputs, run_as, labels=labels))
        return runs

    def runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Run]:
        return self.store.runs(workflow=workflow, status=status, limit=limit)

    def show(self, run_id: str) -> dict[str, Any]:
        """Everything an approver or operator needs: inputs, each step's output (the AI draft,
        its sources and the endpoint/model that made it), the approval and its votes."""
        self.tick()
        run = self.store.run(run_id)
        wf = Workflow.from_json(run.definition)
        records = self.store.steps(run_id)
        steps = []
        for step in wf.steps:
            rec = records.get(step.id)
            steps.append(
                {
                    "id": step.id,
                    "kind": step.kind,
                    "title": step.title,
                    **(rec.to_dict() if rec else {"status": "pending", "output": None}),
                }
            )
        data = run.to_dict()
        data["steps"] = steps
        approval = self.store.approval(run_id)
        if approval is not None:
            data["approval"] = {
                **approval.to_dict(),
                "expires": _iso(approval.expires_at),
                # This round's votes: earlier rounds were on outputs that have changed since.
                "votes": self.store.votes(run_id, approval.step_id, approval.round),
            }
        data["kill_switch"] = self.store.switch(run.workflow)
        # What an approver reads first: why there is no draft, and which draft they may edit.
        data["attention"] = next(
            (
                str(rec.output["reason"])
                for rec in records.values()
                if isinstance(rec.output, dict)
                and rec.output.get("reason")
                and not str(rec.output.get("text") or "").strip()
            ),
            None,
        )
        data["editable"] = None
        if approval is not None and approval.status == "open":
            step = wf.steps[wf.step_index(approval.step_id)]
            if isinstance(step, ApproveStep) and step.edits is not None:
                rec = records.get(step.edits)
                output = rec.output if rec is not None and isinstance(rec.output, dict) else {}
                data["editable"] = {"step": step.edits, "text": str(output.get("text") or "")}
        return data

    def pending_approvals(self, user_id: str) -> list[dict[str, Any]]:
        """Runs this user may decide now (in the group, not the requester, not yet voted)."""
        self.tick()
        principal = self.ws.principal(user_id)
        out = []
        for approval in self.store.open_approvals():
            run = self.store.run(approval.run_id)
            try:
                check_approver(run, approval, principal, self.store.overriders(run.id))
            except ApprovalRefused:
                continue
            votes = self.store.votes(run.id, approval.step_id, approval.round)
            if any(v["user_id"] == principal.id for v in votes):
                continue
            out.append({"run": run.to_dict(), "approval": approval.to_dict()})
        return out

    # -- approvals ----------------------------------------------------------------------------

    def tick(self) -> list[dict[str, Any]]:
        """Apply approval expiry: escalate once to `escalate_to`, then expire the run."""
        now = self.clock()
        changes: list[dict[str, Any]] = []
        for approval in self.store.open_approvals():
            if now < approval.expires_at:
                continue
            run = self.store.run(approval.run_id)
            with self.store.transaction():
                if approval.escalate_to and not approval.escalated:
                    groups = (*approval.groups, approval.escalate_to)
                    self.store.update_approval(
                        run.id,
                        approval.step_id,
                        group=approval.escalate_to,
                        groups=groups,
                        escalated=1,
                        expires_at=now + approval.expiry_hours * 3600,
                    )
                    change: dict[str, Any] = {
                        "run_id": run.id,
                        "escalated_to": approval.escalate_to,
                    }
                    outcome = "escalated"
                else:
                    self.store.update_approval(run.id, approval.step_id, status="expired")
                    self.store.set_step(run.id, approval.step_id, "expired")
                    self.store.update_run(
                        run.id,
                        status="expired",
                        error=f"approval by {' or '.join(approval.groups)} expired without a"
                        " decision",
                    )
                    change = {"run_id": run.id, "expired": True}
                    outcome = "expired"
            self.engine.audit(
                "system:flows",
                "flow.approval",
                run,
                approval.step_id,
                outcome=outcome,
                extra={"groups": list(approval.groups), "escalate_to": approval.escalate_to},
            )
            changes.append(change)
        return changes

    def approve(
        self, run_id: str, user_id: str, reason: str = "", *, text: str | None = None
    ) -> Run:
        """Approve; with `text`, the approver's edit of the draft (the approval step's
        `edits`) replaces it first and is what the run sends. A run without a draft (nothing
        relevant found) can only be approved with a reply written this way."""
        # Launch (and recover) before the vote: if another process holds the runner, nothing
        # is recorded; and replayed old segments settle before this run moves on.
        self._engine()
        self.tick()
        edit: dict[str, Any] | None = None
        with self.store.transaction():
            run, approval = self._open_approval(run_id)
            principal = self.ws.principal(user_id)
            self._check_approver(run, approval, principal)
            wf = Workflow.from_json(run.definition)
            step = wf.steps[wf.step_index(approval.step_id)]
            assert isinstance(step, ApproveStep)
            if text is not None:
                edit = self._edit_draft(run, wf, step, principal.id, text)
                approval = self.store.approval(run.id, approval.step_id) or approval
            else:
                self._check_draft(run, step)
            self.store.add_vote(approval, principal.id, "approve", reason, self.clock())
            approvers = [
                v["user_id"]
                for v in self.store.votes(run.id, approval.step_id, approval.round)
                if v["decision"] == "approve" and v["outputs_sha256"] == approval.outputs_sha256
            ]
            complete = len(approvers) >= approval.required
            if complete:
                wf = Workflow.from_json(run.definition)
                index = wf.step_index(approval.step_id)
                self.store.update_approval(run.id, approval.step_id, status="approved")
                self.store.set_step(
                    run.id, approval.step_id, "done", {"approved": True, "approvers": approvers}
                )
                self.store.next_segment(run.id, index + 1)
        if edit is not None:
            self.engine.audit(
                principal.id,
                "flow.draft.edit",
                run,
                step.edits,
                outcome="edited",
                extra=edit,
            )
        self._audit_vote(
            principal,
            run,
            approval,
            "approved" if complete else "approve",
            reason,
            votes=len(approvers),
            required=approval.required,
        )
        if complete:
            self._engine().run_segment(self.store.run(run.id))
        return self.store.run(run.id)

    def _check_draft(self, run: Run, step: ApproveStep) -> None:
        """An approval of a draft that is empty would send nothing: refuse, saying how."""
        if step.edits is None:
            return
        rec = self.store.steps(run.id).get(step.edits)
        output = rec.output if rec is not None and isinstance(rec.output, dict) else {}
        if not str(output.get("text") or "").strip():
            why = output.get("reason") or "the draft is empty"
            raise FlowConflict(
                f"run {run.id} has no draft to approve ({why}): write the reply and approve"
                " with it (--text-file in the CLI, `text` in the API, the reply box on the"
                " approval page), or reject the run with a reason"
            )

    def _edit_draft(
        self, run: Run, wf: Workflow, step: ApproveStep, user: str, text: str
    ) -> dict[str, Any]:
        """Replace the draft's text with the approver's (inside the caller's transaction) and
        bind the approval to what it now shows; returns what the audit log records."""
        if step.edits is None:
            raise FlowError(
                f"approval step {step.id} does not allow edits; add `edits: <draft step>` to it"
            )
        edited = text.replace("\r\n", "\n").strip()
        if not edited:
            raise FlowError(
                "the edited reply is empty: write the reply text, or reject the run with a reason"
            )
        if len(edited) > 20_000:
            raise FlowError("the edited reply is longer than 20000 characters; shorten it")
        rec = self.store.steps(run.id).get(step.edits)
        original = dict(rec.output) if rec is not None and isinstance(rec.output, dict) else {}
        before = str(original.get("text") or "")
        receipt = {
            "original_sha256": self.engine.sha(before),
            "edited_sha256": self.engine.sha(edited),
            "had_draft": bool(before.strip()),
        }
        provenance = str(original.get("provenance") or "")
        output = {
            **original,
            "text": edited,
            "original_text": before,
            "provenance": f"{provenance}, edited by {user}" if provenance else f"Written by {user}",
            "sources": original.get("sources") or "(none: this reply was written by a person)",
            "edit": {"by": user, "at": _iso(self.clock()), **receipt},
        }
        self.store.set_step(run.id, step.edits, "done", output)
        digest = self.engine.approved_digest(run, wf, wf.step_index(step.id))
        self.store.update_approval(run.id, step.id, outputs_sha256=digest)
        return {**receipt, "outputs_sha256": digest}

    def reject(self, run_id: str, user_id: str, reason: str) -> Run:
        if not reason.strip():
            raise FlowError("a reason is required to reject a run: add --reason '...'")
        self.tick()
        with self.store.transaction():
            run, approval, principal = self._vote(run_id, user_id, "reject", reason)
            self.store.update_approval(run.id, approval.step_id, status="rejected")
            self.store.set_step(
                run.id, approval.step_id, "rejected", {"approved": False, "approvers": []}
            )
            self.store.update_run(run.id, status="rejected", error=f"rejected by {principal.id}")
        self._audit_vote(principal, run, approval, "rejected", reason)
        return self.store.run(run.id)

    def _vote(
        self, run_id: str, user_id: str, decision: str, reason: str
    ) -> tuple[Run, Approval, Principal]:
        """Check and record one vote (inside the caller's transaction), bound to the digest
        of the outputs the approval shows now."""
        run, approval = self._open_approval(run_id)
        principal = self.ws.principal(user_id)
        self._check_approver(run, approval, principal)
        self.store.add_vote(approval, principal.id, decision, reason, self.clock())
        return run, approval, principal

    def _audit_vote(
        self,
        principal: Principal,
        run: Run,
        approval: Approval,
        outcome: str,
        reason: str,
        **extra: Any,
    ) -> None:
        self.engine.audit(
            principal.id,
            "flow.approval.vote",
            run,
            approval.step_id,
            outcome=outcome,
            extra={
                **extra,
                "round": approval.round,
                "outputs_sha256": approval.outputs_sha256,
                "reason_sha256": self.engine.sha(reason),
            },
            personal={"reason": reason} if reason else None,
        )

    def _check_approver(self, run: Run, approval: Approval, principal: Principal) -> None:
        """Refusals (self-approval, an overrider approving, wrong group) are logged as
        denials, then raised."""
        overriders = self.store.overriders(run.id)
        try:
            check_approver(run, approval, principal, overriders)
        except ApprovalRefused as exc:
            own = principal.id == run.requester or principal.id in overriders
            self.engine.audit(
                principal.id,
                "flow.approval.vote",
                run,
                approval.step_id,
                decision="deny",
                outcome="refused",
                extra={"why": "separation_of_duties" if own else "not_in_group"},
            )
            raise exc

    def _open_approval(self, run_id: str) -> tuple[Run, Approval]:
        run = self.store.run(run_id)
        approval = self.store.approval(run_id)
        if run.status != "waiting_approval" or approval is None or approval.status != "open":
            raise FlowConflict(f"run {run_id} is {run.status}, not waiting for an approval")
        return run, approval

    # -- operator controls --------------------------------------------------------------------

    def _operator(self, user_id: str) -> str:
        principal = self.ws.principal(user_id)
        check_operator(principal, self.config.flows.operators)
        return principal.id

    def _control(self, user: str, run: Run, what: str, reason: str, **extra: Any) -> None:
        self.engine.audit(
            user,
            "flow.control",
            run,
            extra.pop("step_id", None),
            outcome=what,
            extra={"reason_sha256": self.engine.sha(reason), **extra},
            personal={"reason": reason} if reason else None,
        )

    def pause(self, run_id: str, user_id: str, reason: str = "") -> Run:
        user = self._operator(user_id)
        run = self.store.run(run_id)
        if run.status in FINAL:
            raise FlowConflict(f"run {run_id} is {run.status}; there is nothing to pause")
        self.store.update_run(run_id, paused=1)
        self._control(user, run, "pause", reason)
        return self.store.run(run_id)

    def resume(self, run_id: str, user_id: str, reason: str = "") -> Run:
        user = self._operator(user_id)
        self._engine()
        run = self.store.run(run_id)
        switch = self.store.switch(run.workflow)
        if switch is not None:
            scope = "--all" if switch["scope"] == GLOBAL else f"--workflow {run.workflow}"
            raise FlowConflict(
                f"the kill switch is on for {'all workflows' if switch['scope'] == GLOBAL else run.workflow};"
                f" lift it first with `sovra flow resume {scope} --as {user_id}`"
            )
        self.store.update_run(run_id, paused=0)
        self._control(user, run, "resume", reason)
        if run.status == "paused":
            self.store.next_segment(run_id, run.step_index)
            self._engine().run_segment(self.store.run(run_id))
        return self.store.run(run_id)

    def kill_switch(self, scope: str, on: bool, user_id: str, reason: str = "") -> list[Run]:
        """Set (on) or lift (off) the kill switch for one workflow or all (`*`). Lifting it
        resumes the runs it paused (not those an operator paused one by one)."""
        user = self._operator(user_id)
        if not on:
            self._engine()
        if scope != GLOBAL:
            self.workflow(scope)
        if on and not reason.strip():
            raise FlowError("a reason is required to set a kill switch: add --reason '...'")
        self.store.set_switch(scope, on, user, reason)
        self.ws.record(
            user,
            "flow.kill_switch",
            [],
            outcome="on" if on else "off",
            details={"scope": scope, "reason_sha256": self.engine.sha(reason)},
            personal={"reason": reason} if reason else None,
        )
        resumed: list[Run] = []
        if not on:
            for run in self.store.runs(status="paused", limit=10_000):
                if run.paused or (scope != GLOBAL and run.workflow != scope):
                    continue
                if self.store.switch(run.workflow) is not None:
                    continue
                self.store.next_segment(run.id, run.step_index)
                self._engine().run_segment(self.store.run(run.id))
                resumed.append(self.store.run(run.id))
        return resumed

    def override(
        self, run_id: str, step_id: str, output: Mapping[str, Any], user_id: str, reason: str
    ) -> Run:
        """Replace (part of) a step's output, with a reason; a failed step's run continues."""
        user = self._operator(user_id)
        self._engine()
        if not reason.strip():
            raise FlowError("a reason is required to override a step: add --reason '...'")
        run = self.store.run(run_id)
        if run.status in FINAL or run.status == "running":
            raise FlowConflict(
                f"run {run_id} is {run.status}; only a failed, paused or waiting run's"
                " steps can be overridden"
            )
        wf = Workflow.from_json(run.definition)
        index = wf.step_index(step_id)
        step = wf.steps[index]
        if isinstance(step, ApproveStep | ActStep):
            raise FlowError(
                f"step {step_id} is an {step.kind} step: its outcome cannot be overridden (an"
                " approval needs approvers; an action's result is what happened — retry it)"
            )
        ran = index < run.step_index or (index == run.step_index and run.status == "failed")
        if not ran:
            raise FlowError(f"step {step_id} has not run yet; override a step that has")
        allowed = wf.outputs_of(step)
        unknown = sorted(set(output) - allowed)
        if unknown:
            raise FlowError(
                f"step {step_id} has no output {', '.join(unknown)} (outputs: {', '.join(sorted(allowed))})"
            )
        rec = self.store.steps(run_id).get(step_id)
        merged = {**(rec.output if rec and isinstance(rec.output, dict) else {}), **output}
        with self.store.transaction():
            self.store.set_step(
                run_id, step_id, "overridden", merged, override_by=user, override_reason=reason
            )
            self.store.add_override(run_id, step_id, user)
        self._control(
            user, run, "override", reason, step_id=step_id, output_sha256=self.engine.sha(merged)
        )
        # Votes cast so far were on other outputs: a waiting approval starts a new round.
        # (An approval already given is checked again before the next action runs.)
        stale = self.engine.stale_approval(run, wf, len(wf.steps), status="open")
        if stale is not None:
            self.engine.reopen_approval(self.store.run(run_id), wf, stale, "outputs_changed")
        if run.status == "failed" and index == run.step_index:
            self.store.next_segment(run_id, index + 1)
            self._engine().run_segment(self.store.run(run_id))
        return self.store.run(run_id)

    def retry(self, run_id: str, user_id: str, reason: str = "") -> Run:
        """Re-run a failed run's failed step (an action keeps its idempotency key)."""
        user = self._operator(user_id)
        self._engine()
        run = self.store.run(run_id)
        if run.status != "failed":
            raise FlowConflict(f"run {run_id} is {run.status}; only a failed run can be retried")
        wf = Workflow.from_json(run.definition)
        self._control(user, run, "retry", reason, step_id=wf.steps[run.step_index].id)
        self.store.next_segment(run_id, run.step_index)
        self._engine().run_segment(self.store.run(run_id))
        return self.store.run(run_id)
