"""Demo questions over a few real runbooks: the extractive answers the fast path must keep.

`python -m tests.support.demo_answers` records them into tests/answer/fixtures/ (run it only
on code whose answers are the reference); tests/answer/test_demo_answers.py compares.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from sovra.answer import Answer
from sovra.domain import QueryOptions
from sovra.workspace import Workspace
from tests.support.answer import make_site, open_workspace

RUNBOOKS = Path(__file__).resolve().parents[2].parent / "shared/data/company/runbooks/alerts"
FILES = (
    "cluster-etcd-operator/etcdDatabaseQuotaLowSpace.md",
    "cluster-etcd-operator/etcdMembersDown.md",
    "cluster-etcd-operator/etcdNoLeader.md",
    "cluster-etcd-operator/etcdHighFsyncDurations.md",
    "cluster-monitoring-operator/KubeAPIDown.md",
    "cluster-monitoring-operator/KubeJobFailed.md",
    "cluster-monitoring-operator/AlertmanagerFailedReload.md",
    "cluster-monitoring-operator/ClusterOperatorDown.md",
)
QUESTIONS = (
    "what should I do when etcd members are down?",
    "what happens when the etcd database quota runs low?",
    "why does etcd have no leader?",
    "what does high fsync duration mean for etcd?",
    "how do I fix a failed Kubernetes job?",
    "what is the impact of the Kubernetes API being down?",
    "Alertmanager failed to reload its configuration",
    "wie behebe ich einen ausgefallenen Cluster-Operator?",
    "what is the parental leave policy?",
)
FIXTURE = Path(__file__).resolve().parents[1] / "answer/fixtures/demo_answers.json"
USER = "alice"  # in group:sre


def site_files() -> dict[str, str]:
    return {f"runbooks/{rel}": (RUNBOOKS / rel).read_text(encoding="utf-8") for rel in FILES}


def ask_one(ws: Workspace, question: str) -> Answer:
    """The final extractive answer to `question`, asked as the demo SRE."""
    final = None
    principal = ws.principal_for(USER, "ask", question)
    for event in ws.ask(principal, question, QueryOptions(extractive=True)):
        final = event.answer or final
    assert final is not None
    return final


def ask_all(ws: Workspace) -> list[dict[str, Any]]:
    out = []
    for q in QUESTIONS:
        final = ask_one(ws, q)
        out.append(
            {
                "question": q,
                "found": final.found,
                "text": final.text,
                "chunks": [c.chunk_id for c in final.citations],
            }
        )
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = open_workspace(make_site(Path(tmp), site_files()))
        try:
            answers = ask_all(ws)
        finally:
            ws.close()
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n", "utf-8")
    sys.stdout.write(f"{len(answers)} answers → {FIXTURE}\n")


if __name__ == "__main__":
    main()
