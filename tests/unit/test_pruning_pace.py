"""The prune's pace between batches: the pause on an idle database, slower on a busy one."""

from __future__ import annotations

from nightcrew.upkeep.pruning import rest_seconds


def test_a_quick_batch_waits_the_pause() -> None:
    assert rest_seconds(0.05, 0.01) == 0.05


def test_a_slow_batch_waits_twice_its_time() -> None:
    assert rest_seconds(0.05, 0.2) == 0.4


def test_no_pause_runs_batches_back_to_back() -> None:
    assert rest_seconds(0.0, 0.2) == 0.0
