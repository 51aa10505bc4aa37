"""Running nightcrew's own event loop: uvloop when it is there, asyncio otherwise.

Only for the loops nightcrew starts itself (``nightcrew worker``, ``run``, the demo); a
`Worker` embedded in an application runs on whatever loop the application chose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from nightcrew.errors import ConfigurationError
from nightcrew.settings import Settings

R = TypeVar("R")


def run_loop(coro: Coroutine[Any, Any, R], settings: Settings) -> R:
    """``asyncio.run`` on the loop the settings ask for.

    uvloop's loop schedules callbacks and tasks in C; on a worker of no-op tasks it is
    roughly a tenth faster (bench/, drain). "auto" falls back to asyncio where uvloop is
    not installed (it does not exist on Windows).
    """
    choice = settings.event_loop
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                coro.close()
                raise ConfigurationError(
                    "NIGHTCREW_EVENT_LOOP=uvloop but uvloop is not installed"
                ) from None
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)
