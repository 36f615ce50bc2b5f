"""Who may decide a run: approvers (group membership, separation of duties) and operators.

The same checks serve the CLI and the REST API, so "the requester can never approve" holds
whichever way the decision arrives.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sovra.domain import Principal
from sovra.errors import Forbidden
from sovra.flows.base import FlowError
from sovra.flows.store import Approval, Run


class NotAllowed(Forbidden, FlowError):
    """This principal may not do this to a run; the message says why."""


class ApprovalRefused(NotAllowed):
    """This principal may not decide this approval; the message says why."""


def check_approver(
    run: Run, approval: Approval, principal: Principal, overriders: Collection[str] = ()
) -> None:
    """Separation of duties: neither the requester nor anyone who replaced a step's outputs
    (and so chose part of what is approved) may decide; then group membership."""
    others = "; ask another member of " + " or ".join(approval.groups)
    if principal.id == run.requester:
        raise ApprovalRefused(
            f"separation of duties: {principal.id} started run {run.id} and cannot approve or"
            " reject it" + others
        )
    if principal.id in overriders:
        raise ApprovalRefused(
            f"separation of duties: {principal.id} overrode a step of run {run.id} and cannot"
            " approve or reject it" + others
        )
    if not set(approval.groups) & principal.groups:
        raise ApprovalRefused(
            f"{principal.id} is not in {' or '.join(approval.groups)}, who decide run {run.id}"
        )


def check_operator(principal: Principal, groups: Sequence[str]) -> None:
    if not set(groups) & principal.groups:
        raise NotAllowed(
            f"{principal.id} may not operate flows: only members of {', '.join(groups)}"
            " ([flows] operators in sovra.toml)"
        )
