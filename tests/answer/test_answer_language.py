"""Extractive answers say when they quote a passage in another language than the question's."""

from __future__ import annotations

from sovra.answer.extractive import cross_lingual_note


def test_cross_lingual_quote_is_announced() -> None:
    note = cross_lingual_note("ar", ["en"])
    assert "English" in note and "Arabic" in note and "Not translated" in note


def test_same_language_or_unknown_needs_no_note() -> None:
    assert cross_lingual_note("de", ["de"]) == ""
    assert cross_lingual_note("und", ["en"]) == ""
    assert cross_lingual_note("de", ["und"]) == ""
