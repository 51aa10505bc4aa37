"""How values read on the dashboard: times, durations, JSON, status names.

Template filters, kept as plain functions so they are tested without a template. Times
are shown in UTC (the store's clock) with the relative age beside them; the machine
readable value goes into ``<time datetime=...>`` for assistive technology.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape


def when(value: datetime | None) -> str:
    """``2026-12-01 14:05:03`` (UTC), or an em dash for nothing."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.5 s``, ``4 min 05 s``, ``3 h 02 min``, ``2 d 4 h``."""
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """``3 min 05 s ago`` / ``in 12.0 s``."""
    if value is None:
        return ""
    now = now or datetime.now(UTC)
    delta = (now - value).total_seconds()
    if delta >= 0:
        return f"{duration(delta)} ago"
    return f"in {duration(-delta)}"


def timestamp(value: datetime | None, now: datetime | None = None) -> Markup:
    """A ``<time>`` element: the UTC time, and its age as a tooltip."""
    if value is None:
        return Markup("—")
    iso = value.astimezone(UTC).isoformat()
    return Markup(
        f'<time datetime="{escape(iso)}" title="{escape(ago(value, now))}">'
        f"{escape(when(value))}</time>"
    )


def pretty_json(value: Any) -> str:
    """Indented JSON for ``<pre>`` blocks (text that is not JSON shown as it is)."""
    if isinstance(value, str):
        text = value
        try:
            value = json.loads(text)
        except ValueError:
            return text
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def status_label(value: Any) -> str:
    """``PARTIAL_SUCCESS`` -> ``partial success``."""
    return str(getattr(value, "value", value)).replace("_", " ").lower()
