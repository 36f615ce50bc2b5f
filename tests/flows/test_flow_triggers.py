"""Automatic triggers: the cron matcher, scheduled runs on a controllable clock, and runs for
documents that appear in a source after the first tick."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sovra.flows.base import FlowError
from sovra.flows.definition import DefinitionError, parse
from sovra.flows.triggers import Cron
from sovra.workspace import open_flows
from tests.support.flows import FakeIndex, adapters, classifiers, config, doc_chunk, make_site


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_cron_fields() -> None:
    weekday_8 = Cron("0 8 * * 1-5")
    assert weekday_8.matches(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))  # a Wednesday
    assert not weekday_8.matches(datetime(2026, 11, 29, 8, 0, tzinfo=UTC))  # Sunday
    assert not weekday_8.matches(datetime(2026, 11, 25, 8, 1, tzinfo=UTC))
    every_15 = Cron("*/15 * * * *")
    assert every_15.matches(datetime(2026, 1, 1, 3, 45, tzinfo=UTC))
    assert not every_15.matches(datetime(2026, 1, 1, 3, 46, tzinfo=UTC))
    first_or_sunday = Cron("0 0 1 * 0")  # day and weekday both set: either matches
    assert first_or_sunday.matches(datetime(2026, 11, 29, 0, 0, tzinfo=UTC))
    assert first_or_sunday.matches(datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    assert Cron("30 9 * * *").due(at("2026-11-25T09:00:00"), at("2026-11-25T09:30:05"))
    assert not Cron("30 9 * * *").due(at("2026-11-25T09:30:05"), at("2026-11-25T09:31:00"))
    for bad in ("* * *", "61 * * * *", "*/0 * * * *", "a b c d e"):
        with pytest.raises(FlowError, match="cron"):
            Cron(bad)


SCHEDULED = """\
name: nightly
trigger: {kind: schedule, cron: "0 2 * * *", run_as: root}
inputs:
  note: {type: string, required: false, default: nightly}
access: [group:staff]
actions: [store]
steps:
  - id: record
    kind: act
    adapter: store
    params: {ticket: "${run.id}", note: "${input.note}"}
"""

ON_DOCUMENT = """\
name: ondoc
trigger: {kind: new_document, source: tickets, run_as: bob}
inputs:
  document_id: {type: string}
  title: {type: string}
access: [group:staff]
actions: [store]
steps:
  - id: record
    kind: act
    adapter: store
    params: {doc: "${input.document_id}", title: "${input.title}"}
"""


def test_trigger_definitions_need_run_as() -> None:
    with pytest.raises(DefinitionError, match="run_as"):
        parse(SCHEDULED.replace(", run_as: root", ""), "w.yaml")
    with pytest.raises(DefinitionError, match="cron"):
        parse(SCHEDULED.replace('"0 2 * * *"', '"0 25 * * *"'), "w.yaml")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_schedule_fires_once_per_due_minute(tmp_path: Path) -> None:
    make_site(tmp_path)
    (tmp_path / "data/workflows/nightly.yaml").write_text(SCHEDULED, encoding="utf-8")
    clock = Clock(at("2026-11-25T01:00:00"))
    with open_flows(config(tmp_path), clock=clock, adapters=adapters(tmp_path)) as flows:
        assert flows.fire_triggers() == ([], [])  # first tick only records the time
        clock.now = at("2026-11-25T01:59:00")
        assert flows.fire_triggers()[0] == []
        clock.now = at("2026-11-25T02:00:30")
        (run,), errors = flows.fire_triggers()
        assert errors == [] and run.status == "completed" and run.requester == "root"
        clock.now = at("2026-11-25T02:01:00")
        assert flows.fire_triggers()[0] == []


def test_new_document_starts_a_run_per_new_document(tmp_path: Path) -> None:
    make_site(
        tmp_path,
        '\n[[sources]]\nname = "tickets"\nkind = "folder"\npath = "t"\naccess = ["group:it-support"]\n',
    )
    (tmp_path / "data/workflows/ondoc.yaml").write_text(ON_DOCUMENT, encoding="utf-8")
    index = FakeIndex()
    index.docs["tickets:1"] = doc_chunk("tickets:1", title="old")
    with open_flows(
        config(tmp_path), adapters=adapters(tmp_path), classifiers=classifiers()
    ) as flows:
        flows.ws._index = index  # type: ignore[assignment]
        assert flows.fire_triggers() == ([], [])
        index.docs["tickets:2"] = doc_chunk("tickets:2", title="printer on fire")
        index.docs["handbook:x"] = doc_chunk("handbook:x", title="not this source")
        (run,), errors = flows.fire_triggers()
        assert errors == []
        assert run.inputs == {"document_id": "tickets:2", "title": "printer on fire"}
        assert run.requester == "bob" and run.status == "completed"
        assert flows.fire_triggers()[0] == []
