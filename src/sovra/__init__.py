"""sovra: a self-hosted, sovereign AI platform for governed search and answers."""

__version__ = "0.1.0"
