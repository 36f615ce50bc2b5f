"""Automatic triggers, fired by `sovra flow tick` (run it from cron every minute, or let a
scheduler call `Flows.fire_triggers`): `schedule` (5-field cron, UTC) and `new_document` (a
document that appeared in a source's index since the last tick).

The first tick only records where things stand: no catch-up runs for the past, no run for every
document that was already indexed when the trigger was added.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sovra.flows.base import FlowError

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _field(spec: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in spec.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text!r} must be at least 1")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(body)
            end = high if step_text else start
        if not (low <= start <= end <= high):
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


class Cron:
    """A 5-field cron expression (minute hour day-of-month month day-of-week), numbers only."""

    def __init__(self, expression: str) -> None:
        parts = expression.split()
        if len(parts) != 5:
            raise FlowError(f"cron {expression!r} needs 5 fields: minute hour day month weekday")
        try:
            fields = [_field(p, lo, hi) for p, (lo, hi) in zip(parts, _RANGES, strict=True)]
        except ValueError as exc:
            raise FlowError(
                f"cron {expression!r}: {exc} (numbers, *, a-b, */n and lists)"
            ) from None
        self.minute, self.hour, self.day, self.month, weekday = fields
        self.weekday = frozenset(d % 7 for d in weekday)  # 0 and 7 are both Sunday
        self._any_day = parts[2] == "*"
        self._any_weekday = parts[4] == "*"

    def matches(self, when: datetime) -> bool:
        if when.minute not in self.minute or when.hour not in self.hour:
            return False
        if when.month not in self.month:
            return False
        day_ok = when.day in self.day
        weekday_ok = (when.isoweekday() % 7) in self.weekday
        if self._any_day or self._any_weekday:  # cron: both restricted means either may match
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def due(self, after: float, until: float) -> bool:
        """Whether a matching minute lies in (after, until] (scans at most one day)."""
        start = datetime.fromtimestamp(after, UTC).replace(second=0, microsecond=0)
        end = datetime.fromtimestamp(until, UTC)
        minute = start + timedelta(minutes=1)
        stop = min(end, start + timedelta(days=1))
        while minute <= stop:
            if self.matches(minute):
                return True
            minute += timedelta(minutes=1)
        return False
