"""locust users for `bench/bench_load.py`: a mix of search, extractive ask and document reads
against a running `sovra serve`, as an SRE (alice) and a staff member (carol).

Keys come from the environment (SOVRA_BENCH_KEYS="alice=sovra_...,carol=sovra_...").
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

KEYS = dict(
    item.split("=", 1) for item in os.environ.get("SOVRA_BENCH_KEYS", "").split(",") if item
)
QUERIES = [
    "etcd database quota low space",
    "etcd members down",
    "etcd no leader",
    "high fsync durations",
    "demo day",
    "how do teams collaborate",
    "background check policy",
    "alert runbook severity critical",
]
RUNBOOK = "runbooks:alerts/cluster-etcd-operator/etcdDatabaseQuotaLowSpace.md"
HANDBOOK = "handbook:content/departments/engineering/demo-day.md"


class Employee(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.user = random.choice(sorted(KEYS))
        self.client.headers["Authorization"] = f"Bearer {KEYS[self.user]}"

    @task(6)
    def search(self) -> None:
        self.client.post(
            "/api/v1/search", json={"query": random.choice(QUERIES), "k": 10}, name="search"
        )

    @task(2)
    def ask_extractive(self) -> None:
        self.client.post(
            "/api/v1/ask",
            json={"question": random.choice(QUERIES), "extractive": True},
            name="ask (extractive)",
        )

    @task(2)
    def document(self) -> None:
        doc = RUNBOOK if self.user == "alice" else HANDBOOK
        self.client.get(f"/api/v1/documents/{doc}", name="document")

    @task(1)
    def forbidden_document(self) -> None:
        # carol may not read the runbook: 404 is the correct answer, anything else an error.
        if self.user != "carol":
            return
        with self.client.get(
            f"/api/v1/documents/{RUNBOOK}", name="document (forbidden → 404)", catch_response=True
        ) as resp:
            if resp.status_code == 404:
                resp.success()
            else:
                resp.failure(f"expected 404, got {resp.status_code}")
