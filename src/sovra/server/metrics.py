"""Prometheus metrics, in a registry of the app's own (several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "sovra_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.answers = Counter(
            "sovra_answers_total",
            "Answers by endpoint and generation",
            ["endpoint", "generation", "found"],
            registry=self.registry,
        )
        self.denials = Counter(
            "sovra_denials_total",
            "Requests refused: authentication, authorisation, rate limit",
            ["reason"],
            registry=self.registry,
        )
        self.source_documents = Gauge(
            "sovra_source_documents",
            "Documents per source and sync status",
            ["source", "status"],
            registry=self.registry,
        )
        self.source_last_sync = Gauge(
            "sovra_source_last_sync_timestamp_seconds",
            "When each source last finished a sync",
            ["source"],
            registry=self.registry,
        )
