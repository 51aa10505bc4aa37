"""What the audit log keeps of an action's parameters: secrets never, text both databases
can store."""

from __future__ import annotations

from nightcrew.actions import REDACTED, redact


def test_secret_looking_keys_are_redacted_at_any_depth() -> None:
    kept = redact(
        {
            "password": "hunter2",
            "api_key": "k",
            "X-Auth-Token": "t",
            "auth": "a",
            "nested": {"client_secret": "s", "items": [{"refresh_token": "r"}]},
            "author": "Ada",
            "steps": 5,
        }
    )
    assert kept == {
        "password": REDACTED,
        "api_key": REDACTED,
        "X-Auth-Token": REDACTED,
        "auth": REDACTED,
        "nested": {"client_secret": REDACTED, "items": [{"refresh_token": REDACTED}]},
        "author": "Ada",
        "steps": 5,
    }


def test_text_is_made_storable() -> None:
    assert redact({"a\x00": "b\x00", "s": "\ud800"}) == {"a\ufffd": "b\ufffd", "s": "?"}
    assert redact(float("nan")) == "nan"
