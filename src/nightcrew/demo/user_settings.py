"""The users table the origin's upgrade processor works on, made small and self-contained.

In the origin, ``UserSettings`` rows carry a ``user_version`` and a deploy bumps
``CURRENT_USER_SETTINGS_VERSION`` whenever the shape of the settings changes; maintenance
tasks then bring every older row up to date in the background. This module is that table
and that upgrade, with a settings format small enough to read in one sitting:

* version 1: ``{"theme": "dark", "llm": "openai/gpt-4o", "language": "en"}``
* version 2: ``llm`` is split into ``{"provider": ..., "model": ...}``
* version 3: ``theme`` becomes ``{"mode": ..., "contrast": "normal"}`` and
  ``confirmation_mode`` is added (off)

The table has its own `MetaData`, apart from nightcrew's, exactly as a host
application's tables would be: nightcrew's migrations never touch it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, func, insert, select

from nightcrew import Database

#: The version every user should end up at; users below it are "outdated".
CURRENT_USER_SETTINGS_VERSION = 3

#: Not nightcrew's metadata: the host application owns this table.
metadata = MetaData()

user_settings = Table(
    "user_settings",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("user_version", Integer, nullable=False),
    # Text, not JSON: a corrupt value must be readable so it can be reported per user;
    # a JSON column would fail the whole SELECT on the first undecodable row.
    Column("settings_json", Text, nullable=False),
    Index("ix_user_settings_user_version", "user_version"),
)


class CorruptSettings(ValueError):
    """One user's stored settings cannot be upgraded; the message says what is wrong."""


def _v1_to_v2(settings: dict[str, Any]) -> dict[str, Any]:
    llm = settings.get("llm")
    if not isinstance(llm, str) or llm.count("/") != 1:
        raise CorruptSettings(f"'llm' should be a 'provider/model' string, found {llm!r}")
    provider, model = llm.split("/")
    return {**settings, "llm": {"provider": provider, "model": model}}


def _v2_to_v3(settings: dict[str, Any]) -> dict[str, Any]:
    theme = settings.get("theme")
    if theme not in ("dark", "light"):
        raise CorruptSettings(f"'theme' should be 'dark' or 'light', found {theme!r}")
    return {
        **settings,
        "theme": {"mode": theme, "contrast": "normal"},
        "confirmation_mode": False,
    }


#: ``UPGRADES[v]`` turns version ``v`` settings into version ``v + 1``.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def upgrade_settings(settings_json: str, from_version: int) -> str:
    """Return the settings upgraded step by step to `CURRENT_USER_SETTINGS_VERSION`.

    Raises `CorruptSettings` when the stored value cannot be read or upgraded, so the
    caller can record that user and go on with the others.
    """
    try:
        settings = json.loads(settings_json)
    except ValueError as exc:
        raise CorruptSettings(f"settings are not valid JSON ({exc})") from None
    if not isinstance(settings, dict):
        raise CorruptSettings(f"settings are a JSON {type(settings).__name__}, not an object")
    for version in range(from_version, CURRENT_USER_SETTINGS_VERSION):
        step = UPGRADES.get(version)
        if step is None:
            raise CorruptSettings(f"no upgrade from version {version}")
        settings = step(settings)
    return json.dumps(settings, sort_keys=True)


def create_table(database_url: str) -> None:
    """Create ``user_settings`` if missing (the host application's job, not nightcrew's)."""
    database = Database(database_url)
    try:
        metadata.create_all(database.sync_engine)
    finally:
        database.dispose()


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What `seed_users` wrote, so a caller can check the outcome against it."""

    total: int
    already_current: int
    outdated: int
    corrupt_user_ids: tuple[str, ...]


def _v1_settings(rng: random.Random) -> dict[str, Any]:
    return {
        "theme": rng.choice(["dark", "light"]),
        "llm": rng.choice(["openai/gpt-4o", "anthropic/claude-sonnet", "mistral/large"]),
        "language": rng.choice(["en", "fr", "de", "ja"]),
    }


#: Three ways real data goes bad: truncated writes, a wrong type, a hand-edited field.
_CORRUPTIONS: tuple[Callable[[dict[str, Any]], str], ...] = (
    lambda s: json.dumps(s)[:-9],
    lambda s: json.dumps([s]),
    lambda s: json.dumps({**s, "llm": 42}),
)


def seed_users(database_url: str, count: int, *, corrupt: int, seed: int = 7) -> SeedReport:
    """Insert ``count`` users, mostly outdated, ``corrupt`` of them with broken settings.

    Deterministic for a given ``seed``. About one user in ten is already current (nothing
    to do for them). The corrupt users are all outdated, at version 1, and spread evenly
    over the outdated ones, so with one task per 100 users each lands in a different task
    whenever there are enough tasks.
    """
    if count < 0 or corrupt < 0:
        raise ValueError("count and corrupt must be >= 0")
    rng = random.Random(seed)
    width = max(5, len(str(count)))
    versions = [
        CURRENT_USER_SETTINGS_VERSION if rng.random() < 0.1 else rng.choice([1, 2])
        for _ in range(count)
    ]
    outdated = [i for i, v in enumerate(versions) if v < CURRENT_USER_SETTINGS_VERSION]
    if corrupt > len(outdated):
        raise ValueError(f"cannot corrupt {corrupt} users: only {len(outdated)} are outdated")
    # Midpoints of `corrupt` equal slices of the outdated users: distinct, evenly spread.
    n = len(outdated)
    corrupt_indexes = {outdated[(2 * k + 1) * n // (2 * corrupt)] for k in range(corrupt)}
    rows: list[dict[str, Any]] = []
    corrupt_ids: list[str] = []
    for i, version in enumerate(versions):
        user_id = f"user-{i:0{width}d}"
        settings = _v1_settings(rng)
        if i in corrupt_indexes:
            text = _CORRUPTIONS[len(corrupt_ids) % len(_CORRUPTIONS)](settings)
            version = 1
            corrupt_ids.append(user_id)
        else:
            for step in range(1, version):
                settings = UPGRADES[step](settings)
            text = json.dumps(settings, sort_keys=True)
        rows.append({"user_id": user_id, "user_version": version, "settings_json": text})
    database = Database(database_url)
    try:
        with database.sync_engine.begin() as conn:
            if rows:
                conn.execute(insert(user_settings), rows)
    finally:
        database.dispose()
    return SeedReport(
        total=count,
        already_current=count - len(outdated),
        outdated=len(outdated),
        corrupt_user_ids=tuple(corrupt_ids),
    )


def count_users_by_version(database_url: str) -> dict[int, int]:
    """``{user_version: number of users}``: the ground truth a summary is checked against."""
    database = Database(database_url)
    try:
        with database.sync_engine.connect() as conn:
            rows = conn.execute(
                select(user_settings.c.user_version, func.count()).group_by(
                    user_settings.c.user_version
                )
            ).all()
    finally:
        database.dispose()
    return {int(version): int(n) for version, n in rows}
