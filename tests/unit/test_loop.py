"""Which event loop nightcrew's own commands run on."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from nightcrew import ConfigurationError, Settings
from nightcrew import loop as event_loop


async def loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    assert event_loop.run_loop(loop_type(), Settings(event_loop="auto")) is uvloop.Loop


def test_asyncio_can_be_chosen_explicitly() -> None:
    chosen = event_loop.run_loop(loop_type(), Settings(event_loop="asyncio"))
    assert chosen is not uvloop.Loop
    assert issubclass(chosen, asyncio.AbstractEventLoop)


def test_asking_for_uvloop_without_it_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(ConfigurationError, match="uvloop is not installed"):
        event_loop.run_loop(loop_type(), Settings(event_loop="uvloop"))


def test_an_unknown_loop_name_is_refused() -> None:
    with pytest.raises(ValueError, match="event_loop"):
        Settings(event_loop="trio")  # type: ignore[arg-type]
