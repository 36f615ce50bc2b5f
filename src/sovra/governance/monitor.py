"""Monitoring: drift, answer quality and operations figures over time windows, with alerts.

Placeholder committed for the interface (the dataclasses are final); `check` follows.
"""
