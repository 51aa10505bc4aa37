"""Syncing the schedules declared in code (and the upkeep's) into the schedules table.

Every worker does it once when it starts (its ticker, before the first pass), and
``nightcrew schedules sync`` on demand; the store's `sync_schedules` makes it one
transaction under a lock, so many workers starting at once sync one after the other and
the later ones find nothing to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from nightcrew.processors import ProcessorLoader
from nightcrew.schedules.declare import define, load_declared
from nightcrew.schedules.values import ScheduleDefinition, SyncReport
from nightcrew.settings import Settings
from nightcrew.store import TaskStore
from nightcrew.store.schedule_ops import sync_schedules
from nightcrew.upkeep.schedules import upkeep_schedules


@dataclass(frozen=True, slots=True)
class Declared:
    """What the code declares: the app's schedules (if ``NIGHTCREW_SCHEDULES`` is set) and
    the upkeep's, checked. ``retire_user`` says whether the app's schedules were loaded at
    all: only then may a sync disable the app's code rows missing from them."""

    definitions: tuple[ScheduleDefinition, ...]
    retire_user: bool


def declared_schedules(settings: Settings, loader: ProcessorLoader) -> Declared:
    """Load and check every declared schedule (a `ConfigurationError` on any problem)."""
    user = load_declared(settings.schedules) if settings.schedules else []
    everything = [*user, *upkeep_schedules(settings)]
    definitions = tuple(define(s, loader, source="code") for s in everything)
    return Declared(definitions, retire_user=settings.schedules is not None)


def sync_declared(store: TaskStore, declared: Declared) -> SyncReport:
    """Sync from sync code (the CLI)."""
    return store.run(sync_schedules, declared.definitions, retire_user=declared.retire_user)
