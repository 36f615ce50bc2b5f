"""Governance: monitoring and drift, the AI inventory, and compliance reports backed by audit evidence.

Sits above the workspace (it reads the audit log, the usage ledger, flows and tracked evaluation
runs through it) and below the server and CLI, which render what it computes.
"""
