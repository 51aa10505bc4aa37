"""`Schedule` declarations, their definitions, the upkeep's defaults: no database.

A declaration is checked when it is made (a bad one fails at import time); its processor is
checked against the allowlist when it becomes a definition (at sync, where the loader is).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nightcrew import ConfigurationError, Schedule, Settings
from nightcrew.processors import ProcessorLoader
from nightcrew.schedules import CronTrigger, DateTrigger, IntervalTrigger
from nightcrew.schedules.declare import define, load_declared
from nightcrew.schedules.sync import declared_schedules
from nightcrew.upkeep import (
    CANCEL_STALE_PENDING,
    PRUNE,
    PRUNE_DEAD_WORKERS,
    PruneFinishedTasks,
    upkeep_schedules,
)
from tests.processors import Echo
from tests.schedule_jobs import SCHEDULE_MODULES, harvest, refresh

LOADER = ProcessorLoader(SCHEDULE_MODULES)


def test_a_schedule_takes_the_seeds_cron_interval_and_date_triggers() -> None:
    daily = Schedule("daily", cron="0 2 * * *", timezone="Europe/Berlin", processor=Echo())
    every = Schedule("refresh", every=timedelta(hours=6), processor=Echo())
    text = Schedule("text", every="15m", processor=Echo())
    once = Schedule("once", at=datetime(2030, 1, 1, 2, 0), processor=Echo())
    assert daily.trigger == CronTrigger("0 2 * * *", "Europe/Berlin")
    assert every.trigger == IntervalTrigger(timedelta(hours=6))
    assert text.trigger == IntervalTrigger(timedelta(minutes=15))
    assert once.trigger == DateTrigger(datetime(2030, 1, 1, 2, 0, tzinfo=UTC))


def test_a_schedule_is_a_frozen_value() -> None:
    schedule = Schedule("daily", cron="@daily", processor=Echo())
    with pytest.raises(AttributeError):
        schedule.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of cron, every or at"),
        ({"cron": "0 2 * * *", "every": 60}, "exactly one of cron, every or at"),
        ({"cron": "0 25 * * *"}, "invalid cron expression"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"every": 0.5}, "at least 1s"),
        ({"every": 1.5}, "whole seconds"),
        ({"every": 60, "max_instances": 0}, "max_instances must be an integer >= 1"),
        ({"every": 60, "max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"every": 60, "misfire_grace": -1}, "misfire_grace must be"),
        ({"every": 60, "jitter": float("nan")}, "jitter must be"),
        ({"every": 60, "queue": ""}, "queue must be"),
        ({"every": 60, "timeout": 0}, "timeout must be > 0"),
    ],
)
def test_a_bad_declaration_is_a_configuration_error(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Schedule("bad", processor=Echo(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "has space", "-leading", "x" * 201, "nightcrew.prune"])
def test_a_bad_or_reserved_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        Schedule(name, every=60, processor=Echo())


def test_a_schedule_needs_a_processor_instance_not_a_class() -> None:
    with pytest.raises(ConfigurationError, match="processor instance"):
        Schedule("bad", every=60, processor=Echo)  # type: ignore[arg-type]


def test_misfire_grace_takes_seconds_a_timedelta_or_a_duration() -> None:
    assert Schedule("a", every=60, processor=Echo(), misfire_grace=300).misfire_grace == 300
    assert Schedule("b", every=60, processor=Echo(), misfire_grace="5m").misfire_grace == 300
    grace = timedelta(minutes=5)
    assert Schedule("c", every=60, processor=Echo(), misfire_grace=grace).misfire_grace == 300


def test_a_definition_resolves_the_processor_class_defaults() -> None:
    definition = define(Schedule("refresh", every=60, processor=refresh(days=3)), LOADER)
    assert definition.processor_type == "tests.schedule_jobs.refresh"
    assert definition.processor_json == '{"days":3}'
    assert (definition.queue, definition.priority, definition.max_attempts) == ("default", 0, 2)
    overridden = define(
        Schedule("r2", every=60, processor=refresh(), max_attempts=5, priority=7), LOADER
    )
    assert (overridden.max_attempts, overridden.priority) == (5, 7)


def test_a_definition_refuses_a_processor_outside_the_allowlist() -> None:
    strict = ProcessorLoader(["tests.processors"])
    with pytest.raises(ConfigurationError, match="not in the allowed modules"):
        define(Schedule("h", every=60, processor=harvest()), strict)


def test_upkeep_processors_are_always_allowed() -> None:
    loader = ProcessorLoader([])
    assert loader.is_allowed("nightcrew.upkeep.processors.PruneFinishedTasks")
    assert loader.resolve("nightcrew.upkeep.processors.PruneFinishedTasks") is PruneFinishedTasks
    assert not loader.is_allowed("nightcrew.upkeepx.Evil")


def test_the_declared_hash_changes_with_the_definition_and_keeps_enabled_apart() -> None:
    base = define(Schedule("h", cron="0 2 * * *", processor=harvest()), LOADER, source="code")
    same = define(Schedule("h", cron="0 2 * * *", processor=harvest()), LOADER, source="code")
    other = define(Schedule("h", cron="0 3 * * *", processor=harvest()), LOADER, source="code")
    paused = define(
        Schedule("h", cron="0 2 * * *", processor=harvest(), enabled=False), LOADER, source="code"
    )
    assert base.declared_hash() == same.declared_hash()
    assert base.declared_hash() != other.declared_hash()
    digest, _, flag = base.declared_hash().rpartition(":")
    assert flag == "1"
    assert paused.declared_hash() == f"{digest}:0"


def test_declared_schedules_load_from_module_attribute() -> None:
    schedules = load_declared("tests.schedule_jobs:SCHEDULES")
    assert [s.name for s in schedules] == ["harvest", "refresh"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.no_such_module:X", "cannot import"),
        ("tests.schedule_jobs:MISSING", "has no attribute"),
        ("tests.schedule_jobs:NOT_A_LIST", "expected a list"),
        ("tests.schedule_jobs:SCHEDULE_MODULES", "expected nightcrew.Schedule items"),
    ],
)
def test_a_bad_schedules_setting_names_the_setting(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"NIGHTCREW_SCHEDULES={spec}: .*{message}"):
        load_declared(spec)


def test_the_schedules_setting_must_be_module_colon_attribute() -> None:
    with pytest.raises(ValueError, match="module:ATTR"):
        Settings(schedules="tests.schedule_jobs.SCHEDULES")
    assert Settings(schedules="  ").schedules is None


def test_upkeep_defaults_prune_daily_and_leave_stale_cancelling_off() -> None:
    schedules = upkeep_schedules(Settings())
    assert [s.name for s in schedules] == [PRUNE, PRUNE_DEAD_WORKERS]
    prune = schedules[0]
    assert prune.trigger == CronTrigger("17 3 * * *", "UTC")
    assert isinstance(prune.processor, PruneFinishedTasks)
    assert (prune.processor.completed_days, prune.processor.error_days) == (30, 90)
    assert prune.processor.cancelled_days == 90


def test_upkeep_schedules_follow_their_settings() -> None:
    settings = Settings(
        upkeep_prune_cron="0 4 * * sun",
        upkeep_timezone="Europe/Berlin",
        prune_completed_days=7,
        cancel_pending_after_minutes=240,
    )
    names = {s.name: s for s in upkeep_schedules(settings)}
    assert set(names) == {PRUNE, CANCEL_STALE_PENDING, PRUNE_DEAD_WORKERS}
    assert names[PRUNE].trigger == CronTrigger("0 4 * * sun", "Europe/Berlin")
    assert names[CANCEL_STALE_PENDING].processor.minutes == 240  # type: ignore[attr-defined]


def test_upkeep_schedules_can_be_turned_off() -> None:
    no_workers = {"upkeep_prune_workers_cron": "off"}
    assert upkeep_schedules(Settings(upkeep_prune_cron="off", **no_workers)) == []
    off = Settings(prune_completed_days=0, prune_error_days=0, prune_cancelled_days=0, **no_workers)
    assert upkeep_schedules(off) == []


def test_a_bad_upkeep_cron_fails_when_the_schedules_are_declared() -> None:
    with pytest.raises(ConfigurationError, match="invalid cron"):
        declared_schedules(Settings(upkeep_prune_cron="every night"), LOADER)


def test_only_a_set_schedules_setting_lets_a_sync_retire_code_schedules() -> None:
    unset = declared_schedules(Settings(), LOADER)
    assert not unset.retire_user
    assert [d.name for d in unset.definitions] == [PRUNE, PRUNE_DEAD_WORKERS]
    declared = declared_schedules(Settings(schedules="tests.schedule_jobs:SCHEDULES"), LOADER)
    assert declared.retire_user
    assert [d.name for d in declared.definitions] == [
        "harvest",
        "refresh",
        PRUNE,
        PRUNE_DEAD_WORKERS,
    ]
    assert {d.source for d in declared.definitions} == {"code"}
