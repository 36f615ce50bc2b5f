"""`sovra eval answers`: the calibration and report splits are disjoint; thresholds are chosen
on the calibration split by the refusal target."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovra.evals.answer_eval import (
    QA,
    CalibrationRow,
    choose_threshold,
    found_at,
    load_xquad_qas,
)


def test_splits_share_no_article_and_hold_out_different_ones(shared_data: Path) -> None:
    path = shared_data / "eval/xquad/xquad.en.json"
    paras_r, ans_r, un_r, held_r = load_xquad_qas(path, "report")
    _, ans_c, un_c, held_c = load_xquad_qas(path, "calibration")

    def articles(qas: list[QA]) -> set[str]:
        return {qa.paragraph.split("-")[0] for qa in qas}

    report, calibration = articles(ans_r) | articles(un_r), articles(ans_c) | articles(un_c)
    assert report and calibration and not report & calibration
    assert not set(held_r) & set(held_c)
    # Unanswerable really means absent from the index of that split.
    indexed = {d for d, _ in paras_r}
    assert not {qa.paragraph for qa in un_r} & indexed
    assert {qa.paragraph for qa in ans_r} <= indexed
    with pytest.raises(ValueError, match="unknown split"):
        load_xquad_qas(path, "test")


def row(score: float, answerable: bool, f1: float = 0.0, lexical: float = 0.5) -> CalibrationRow:
    return CalibrationRow(True, answerable, score, lexical, score, f1)


def test_lowest_threshold_meeting_the_refusal_target_wins() -> None:
    rows = [row(0.30 + i / 100, False) for i in range(10)]  # unanswerable: 0.30 … 0.39
    rows += [row(0.50, True, 1.0), row(0.36, True, 0.5)]
    t = choose_threshold(rows, target_refusal=0.9, margin=0.0)
    assert t.threshold == 0.39  # refuses 9 of 10 (the 0.39 one is still answered)
    assert t.refusal_rate == 0.9
    assert t.f1 == 0.5  # the 0.36 answer is lost, the 0.50 one kept
    assert not found_at(row(0.6, True, lexical=0.0), 0.5)  # no shared word needs semantic ≥ 0.75
    with pytest.raises(ValueError):
        choose_threshold([row(0.5, True)])
