"""Workflows: definitions, the durable runner, approvals and actions (see flows/base.py)."""
