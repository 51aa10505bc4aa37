"""Processors without a database: the allowlist, loading, validation, size bounds, settings.

A row names its processor by class path, and a row can come from an API caller, so the
allowlist is checked on the string before anything is imported. The import checks run in
a fresh interpreter: the pytest process imports too much for ``sys.modules`` to prove
anything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ConfigDict, ValidationError

from nightcrew import (
    InvalidProcessorConfig,
    MaintenanceTask,
    MaintenanceTaskProcessor,
    PayloadTooLarge,
    ProcessorLoader,
    ProcessorNotAllowed,
    Settings,
)
from nightcrew.errors import ProcessorImportError
from nightcrew.processors import Noop, loader_for, unknown_fields
from tests.conftest import ROOT
from tests.processors import Echo, RecordRun, Retrying

ALLOWED = ["tests.processors"]


@pytest.fixture
def loader() -> ProcessorLoader:
    return ProcessorLoader(ALLOWED)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read ``NIGHTCREW_*``: start every test from none of them."""
    for name in list(os.environ):
        if name.startswith("NIGHTCREW_"):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------- the allowlist, on strings


@pytest.mark.parametrize(
    "class_path",
    ["tests.processors.Echo", "tests.processors.sub.Thing", "tests.processors.a.b.C"],
)
def test_class_paths_in_an_allowed_module_or_its_submodules_are_allowed(
    loader: ProcessorLoader, class_path: str
) -> None:
    assert loader.is_allowed(class_path)


@pytest.mark.parametrize(
    "class_path",
    [
        "tests.processorsX.Foo",  # a longer module name that starts with an allowed one
        "tests.processors_evil.Evil",
        "tests.evil_processor.Evil",  # a sibling module
        "tests.Echo",  # the allowed module's parent package
        "tests.processors",  # the module itself, not a class in it
        "os.system",
        "processors.Echo",
    ],
)
def test_class_paths_outside_the_allowed_modules_are_refused(
    loader: ProcessorLoader, class_path: str
) -> None:
    assert not loader.is_allowed(class_path)
    with pytest.raises(ProcessorNotAllowed, match="not in the allowed modules"):
        loader.resolve(class_path)


@pytest.mark.parametrize(
    "class_path",
    [
        "",
        "Echo",
        ".tests.processors.Echo",
        "tests.processors.Echo.",
        "tests..processors.Echo",
        "tests.processors.1Echo",
        "tests.processors.Echo()",
        "tests.processors.Echo; import os",
        "tests/processors.Echo",
        "tests.processors.Echo ",
    ],
)
def test_malformed_class_paths_are_refused(loader: ProcessorLoader, class_path: str) -> None:
    assert not loader.is_allowed(class_path)
    with pytest.raises(ProcessorNotAllowed):
        loader.resolve(class_path)


def test_an_empty_allowlist_refuses_everything_but_nightcrews_own() -> None:
    with pytest.raises(ProcessorNotAllowed, match=r"allowed modules \(nightcrew\.upkeep\)"):
        ProcessorLoader([]).resolve("tests.processors.Echo")


def test_refusal_message_names_the_setting_to_change(loader: ProcessorLoader) -> None:
    with pytest.raises(ProcessorNotAllowed, match="NIGHTCREW_PROCESSOR_MODULES"):
        loader.resolve("elsewhere.Thing")


# ---------------------------------------------------------------- the allowlist, on classes


def test_an_allowed_processor_class_resolves(loader: ProcessorLoader) -> None:
    assert loader.resolve("tests.processors.Echo") is Echo


def test_a_class_that_is_not_a_processor_is_refused(loader: ProcessorLoader) -> None:
    with pytest.raises(ProcessorNotAllowed, match="not a MaintenanceTaskProcessor"):
        loader.resolve("tests.processors.NotAProcessor")


def test_a_module_level_name_that_is_not_a_class_is_refused(loader: ProcessorLoader) -> None:
    with pytest.raises(ProcessorNotAllowed, match="not a MaintenanceTaskProcessor"):
        loader.resolve("tests.processors.asyncio")


def test_a_missing_name_in_an_allowed_module_is_refused(loader: ProcessorLoader) -> None:
    with pytest.raises(ProcessorNotAllowed):
        loader.resolve("tests.processors.DoesNotExist")


def test_a_missing_submodule_of_an_allowed_module_is_refused(loader: ProcessorLoader) -> None:
    with pytest.raises(ProcessorNotAllowed, match="cannot be imported"):
        loader.resolve("tests.processors.nothing_here.Echo")


def test_an_allowed_module_that_raises_on_import_is_a_processor_import_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('half-deployed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "raises_on_import", raising=False)
    loader = ProcessorLoader(["raises_on_import"])
    with pytest.raises(ProcessorImportError, match="half-deployed"):
        loader.resolve("raises_on_import.Thing")


def test_a_processor_import_error_is_a_refusal() -> None:
    assert issubclass(ProcessorImportError, ProcessorNotAllowed)


def test_a_processor_reached_through_a_module_that_imports_it_is_refused() -> None:
    # This module imports Echo; "tests.unit.test_processors.Echo" is an alias of the real path.
    with pytest.raises(ProcessorNotAllowed, match="alias"):
        ProcessorLoader(["tests.unit"]).resolve(f"{__name__}.Echo")


def test_the_abstract_base_class_is_refused() -> None:
    loader = ProcessorLoader(["nightcrew.processors"])
    with pytest.raises(ProcessorNotAllowed, match="abstract"):
        loader.load("nightcrew.processors.MaintenanceTaskProcessor", "{}")


def test_the_builtin_processor_module_is_allowed_by_default() -> None:
    assert loader_for(Settings()).resolve("nightcrew.processors.Noop") is Noop


# ---------------------------------------------------------------- never imported

_PROBE = """
import json, os, sys
from nightcrew import MaintenanceTask, ProcessorNotAllowed
from nightcrew.processors import ProcessorLoader

allowed, class_path, how = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
try:
    if how == "resolve":
        ProcessorLoader(allowed).resolve(class_path)
    elif how == "load":
        ProcessorLoader(allowed).load(class_path, "{}")
    else:  # the row's own method, with the allowlist from NIGHTCREW_PROCESSOR_MODULES
        MaintenanceTask(processor_type=class_path, processor_json="{}").get_processor()
    outcome = "loaded"
except ProcessorNotAllowed:
    outcome = "refused"
print(json.dumps({
    "outcome": outcome,
    "marker": os.environ.get("NIGHTCREW_EVIL_IMPORTED"),
    "in_sys_modules": "tests.evil_processor" in sys.modules,
}))
"""


def probe_import(allowed: list[str], class_path: str, how: str) -> dict[str, Any]:
    """Try to load ``class_path`` in a fresh interpreter; report whether the module ran."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTCREW_")}
    env["NIGHTCREW_PROCESSOR_MODULES"] = ",".join(allowed)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(allowed), class_path, how],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("how", ["resolve", "load", "get_processor"])
def test_a_module_outside_the_allowlist_is_never_imported(how: str) -> None:
    result = probe_import(ALLOWED, "tests.evil_processor.Evil", how)
    assert result == {"outcome": "refused", "marker": None, "in_sys_modules": False}


def test_the_import_probe_sees_an_import_when_the_module_is_allowed() -> None:
    # The control for the test above: the probe can tell when the module did run.
    result = probe_import(["tests"], "tests.evil_processor.Evil", "resolve")
    assert result == {"outcome": "loaded", "marker": "1", "in_sys_modules": True}


# ---------------------------------------------------------------- round trip


def test_set_processor_stores_the_class_path_and_its_json() -> None:
    task = MaintenanceTask()
    task.set_processor(Echo(value=3, label="x"))
    assert task.processor_type == "tests.processors.Echo"
    assert json.loads(task.processor_json) == {"value": 3, "label": "x"}


def test_get_processor_rebuilds_an_equal_processor(loader: ProcessorLoader) -> None:
    original = RecordRun(path="/tmp/runs.txt", key="k1", seconds=0.5)
    task = MaintenanceTask()
    task.set_processor(original)
    rebuilt = task.get_processor(loader)
    assert type(rebuilt) is RecordRun
    assert rebuilt == original


@given(value=st.integers(min_value=-(2**63), max_value=2**63 - 1), label=st.text())
def test_any_configuration_survives_the_round_trip(value: int, label: str) -> None:
    task = MaintenanceTask()
    task.set_processor(Echo(value=value, label=label))
    assert task.get_processor(ProcessorLoader(ALLOWED)) == Echo(value=value, label=label)


def test_get_processor_without_a_loader_uses_the_environment_allowlist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = MaintenanceTask()
    task.set_processor(Echo(value=1))
    monkeypatch.setenv("NIGHTCREW_PROCESSOR_MODULES", "nightcrew.processors")
    with pytest.raises(ProcessorNotAllowed):
        task.get_processor()
    monkeypatch.setenv("NIGHTCREW_PROCESSOR_MODULES", "nightcrew.processors,tests.processors")
    assert task.get_processor() == Echo(value=1)


def test_class_variables_are_not_part_of_the_configuration() -> None:
    assert json.loads(Retrying(failures=2).model_dump_json()) == {"failures": 2}


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("class_path", "processor_json", "field"),
    [
        ("tests.processors.Echo", '{"value": "not a number"}', "value"),
        ("tests.processors.StrictEcho", '{"value": 1, "surprise": true}', "surprise"),
        ("tests.processors.RecordRun", '{"key": "k"}', "path"),
    ],
    ids=["wrong type", "unknown field of a strict processor", "missing field"],
)
def test_invalid_configuration_names_the_field(
    loader: ProcessorLoader, class_path: str, processor_json: str, field: str
) -> None:
    with pytest.raises(InvalidProcessorConfig, match=rf"\b{field}\b"):
        loader.load(class_path, processor_json)


@pytest.mark.parametrize("processor_json", ["not json", "[1, 2]", ""])
def test_configuration_that_is_not_a_json_object_is_invalid(
    loader: ProcessorLoader, processor_json: str
) -> None:
    with pytest.raises(InvalidProcessorConfig, match=re.escape("tests.processors.Echo")):
        loader.load("tests.processors.Echo", processor_json)


def test_configuration_may_be_given_as_bytes(loader: ProcessorLoader) -> None:
    assert loader.load("tests.processors.Echo", b'{"value": 5}') == Echo(value=5)


def test_unknown_fields_are_accepted_by_default_and_reported(loader: ProcessorLoader) -> None:
    # The origin's semantics: unknown keys in a stored configuration are kept and ignored.
    loaded = loader.load("tests.processors.Echo", '{"value": 1, "surprise": true}')
    assert isinstance(loaded, Echo)
    assert loaded.value == 1
    assert unknown_fields(loaded) == ["surprise"]


def test_unknown_fields_are_kept_in_the_stored_configuration(loader: ProcessorLoader) -> None:
    loaded = loader.load("tests.processors.Echo", '{"value": 1, "surprise": true}')
    assert json.loads(loaded.model_dump_json()) == {"value": 1, "label": "", "surprise": True}


def test_a_processor_without_unknown_fields_reports_none(loader: ProcessorLoader) -> None:
    assert unknown_fields(loader.load("tests.processors.Echo", '{"value": 1}')) == []


class Strict(MaintenanceTaskProcessor):
    """Opts into strict fields, as the base class's configuration allows."""

    model_config = ConfigDict(extra="forbid")
    value: int = 0

    async def __call__(self, task: MaintenanceTask) -> None:
        return None


def test_a_processor_that_forbids_extra_fields_still_refuses_unknown_fields() -> None:
    with pytest.raises(InvalidProcessorConfig, match=r"\bsurprise\b"):
        ProcessorLoader([__name__]).load(Strict.class_path(), '{"value": 1, "surprise": 2}')


def test_a_processor_that_forbids_extra_fields_refuses_them_when_built() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        Strict(value=1, surprise=2)  # type: ignore[call-arg]


# ---------------------------------------------------------------- size bounds


def json_size(processor: MaintenanceTaskProcessor) -> int:
    return len(processor.model_dump_json().encode())


def test_processor_json_at_the_limit_is_accepted() -> None:
    processor = Echo(label="x" * 100)
    loader = ProcessorLoader(ALLOWED, max_json_bytes=json_size(processor))
    assert loader.validate(processor) == processor.model_dump_json()


def test_processor_json_over_the_limit_is_refused_on_enqueue() -> None:
    processor = Echo(label="x" * 100)
    loader = ProcessorLoader(ALLOWED, max_json_bytes=json_size(processor) - 1)
    with pytest.raises(PayloadTooLarge, match="bytes"):
        loader.validate(processor)


def test_processor_json_over_the_limit_is_refused_on_load() -> None:
    loader = ProcessorLoader(ALLOWED, max_json_bytes=32)
    with pytest.raises(PayloadTooLarge):
        loader.load("tests.processors.Echo", json.dumps({"label": "x" * 100}))


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    processor = Echo(label="é" * 50)
    characters = len(processor.model_dump_json())
    assert json_size(processor) > characters
    with pytest.raises(PayloadTooLarge):
        ProcessorLoader(ALLOWED, max_json_bytes=characters).validate(processor)


def test_the_size_limit_comes_from_settings() -> None:
    settings = Settings(processor_modules=ALLOWED, max_processor_json_bytes=16)
    with pytest.raises(PayloadTooLarge):
        loader_for(settings).validate(Echo(label="x" * 100))


def test_size_limits_below_two_bytes_are_refused() -> None:
    with pytest.raises(ValidationError, match="max_processor_json_bytes"):
        Settings(max_processor_json_bytes=1)
    with pytest.raises(ValidationError, match="max_info_bytes"):
        Settings(max_info_bytes=0)


# ---------------------------------------------------------------- settings


def test_processor_modules_default_to_the_builtin_processors() -> None:
    assert Settings().processor_modules == ["nightcrew.processors"]


def test_processor_modules_are_read_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NIGHTCREW_PROCESSOR_MODULES", "myapp.maintenance,nightcrew.processors")
    assert Settings().processor_modules == ["myapp.maintenance", "nightcrew.processors"]


def test_processor_modules_ignore_spaces_and_empty_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTCREW_PROCESSOR_MODULES", " myapp.maintenance , ,other,")
    assert Settings().processor_modules == ["myapp.maintenance", "other"]


def test_a_single_processor_module_needs_no_comma(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTCREW_PROCESSOR_MODULES", "myapp.maintenance")
    assert Settings().processor_modules == ["myapp.maintenance"]


def test_processor_modules_passed_in_code_accept_a_string_or_a_list() -> None:
    assert Settings(processor_modules="a.b,c").processor_modules == ["a.b", "c"]
    assert Settings(processor_modules=["a.b", "c"]).processor_modules == ["a.b", "c"]


@pytest.mark.parametrize("modules", ["my-app.tasks", "myapp..tasks", "myapp.tasks.", "os;rm"])
def test_a_processor_module_that_is_not_a_module_path_is_refused(
    monkeypatch: pytest.MonkeyPatch, modules: str
) -> None:
    monkeypatch.setenv("NIGHTCREW_PROCESSOR_MODULES", modules)
    with pytest.raises(ValidationError, match="not a module path"):
        Settings()


def test_settings_from_the_environment_reach_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTCREW_PROCESSOR_MODULES", "tests.processors")
    monkeypatch.setenv("NIGHTCREW_MAX_PROCESSOR_JSON_BYTES", "64")
    loader = loader_for(Settings())
    assert loader.allowed_modules == ("tests.processors",)
    assert loader.max_json_bytes == 64


def test_unknown_nightcrew_variables_in_the_environment_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NIGHTCREW_NOT_A_SETTING", "1")
    assert Settings().processor_modules == ["nightcrew.processors"]


def test_an_unknown_setting_passed_in_code_is_an_error() -> None:
    with pytest.raises(ValidationError, match="processor_module"):
        Settings(processor_module="typo")  # type: ignore[call-arg]
