"""The rate a job's ETA is computed from: the last windows' images over their time, not the last
window alone (#26: the ETA swung between 30 minutes and 1 h 41 min for one job)."""

from __future__ import annotations

import pytest

from worker.callbacks import SmoothedRate


def test_one_slow_window_moves_the_rate_by_a_share_and_a_lasting_slowdown_all_the_way():
    rate = SmoothedRate(windows=4)
    assert rate.add(100.0) == 100.0
    for _ in range(3):
        rate.add(100.0)
    once = rate.add(25.0)  # 3 windows at 100 images/s and one at 25: 4 windows' images in 7 units
    assert once == pytest.approx(4 / (3 / 100 + 1 / 25))
    assert 40 < once < 60  # not the last window's 25, not the mean of the rates (81)
    for _ in range(3):
        last = rate.add(25.0)
    assert last == pytest.approx(25.0)


def test_a_window_without_a_rate_is_not_counted():
    rate = SmoothedRate()
    rate.add(50.0)
    assert rate.add(0.0) == pytest.approx(50.0)
    assert rate.add(float("nan")) == pytest.approx(50.0)
