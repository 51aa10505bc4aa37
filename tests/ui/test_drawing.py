"""The dashboard's pure parts, without a server: the graph layout, the chart, the forms
drawn from JSON schemas, and how values read."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from nightcrew.ui import fmt, forms, svg
from nightcrew.values import MinuteCount
from tests.ui.ui_processors import Report

DIAMOND = [(1, 2), (1, 3), (2, 4), (3, 4)]


def test_a_steps_depth_is_its_longest_path_of_dependencies() -> None:
    assert svg.depths([1, 2, 3, 4], DIAMOND) == {1: 0, 2: 1, 3: 1, 4: 2}
    # A shortcut edge does not pull a step left of its longest path.
    assert svg.depths([1, 2, 3], [(1, 2), (2, 3), (1, 3)]) == {1: 0, 2: 1, 3: 2}


def test_unknown_edges_are_ignored_and_a_cycle_does_not_loop() -> None:
    assert svg.depths([1, 2], [(1, 2), (7, 1), (2, 9)]) == {1: 0, 2: 1}
    assert set(svg.depths([1, 2, 3], [(1, 2), (2, 3), (3, 2)])) == {1, 2, 3}


def _nodes(ids: list[int]) -> list[svg.GraphNode]:
    return [svg.GraphNode(i, f"s{i}", "PENDING", f"/t/{i}") for i in ids]


def test_layers_go_left_to_right_and_follow_their_parents_order() -> None:
    edges = [(1, 3), (2, 4), (3, 5), (4, 6)]
    placed = {p.node.id: p for p in svg.layout(_nodes([2, 1, 4, 3, 6, 5]), edges)}
    assert placed[1].x == placed[2].x < placed[3].x == placed[4].x < placed[5].x
    # Each child sits in its parent's row: no crossing edges.
    assert (placed[1].y < placed[2].y) == (placed[3].y < placed[4].y) == (placed[5].y < placed[6].y)


def test_the_graph_names_every_step_and_its_status() -> None:
    nodes = [
        svg.GraphNode(1, "extract <raw>", "COMPLETED", "/ui/tasks/1"),
        svg.GraphNode(2, "load", "WORKING", "/ui/tasks/2", progress=40.0),
    ]
    markup = str(svg.pipeline_graph(nodes, [(1, 2)], status_labels={"WORKING": "working"}))
    assert markup.count('class="node ') == 2
    assert 'aria-label="extract &lt;raw&gt;: COMPLETED"' in markup
    assert 'aria-label="load: working, 40%"' in markup
    assert markup.count('class="edge"') == 1
    assert 'class="node-progress"' in markup
    assert "style=" not in markup


def test_the_chart_has_a_bar_per_minute_with_finishes_and_says_its_totals() -> None:
    now = datetime(2026, 12, 1, 14, 30, 20, tzinfo=UTC)
    counts = [
        MinuteCount(now.replace(second=0) - timedelta(minutes=5), completed=7, error=1),
        MinuteCount(now.replace(second=0), completed=2, cancelled=3),
        MinuteCount(now - timedelta(hours=2), completed=99),  # outside the hour
    ]
    markup = str(svg.finished_chart(counts, now))
    assert markup.count("<g><title>") == 2
    assert "9 completed, 1 failed and 3 cancelled in the last hour" in markup
    assert "the busiest minute had 8" in markup
    assert "14:25 UTC: 7 completed, 1 failed, 0 cancelled" in markup
    assert markup.count('class="bar-ok"') == 2
    assert re.search(r'<text class="axis"[^>]*>10</text>', markup)  # 8 rounds up to 10
    assert "style=" not in markup


def test_an_empty_hour_draws_an_empty_chart() -> None:
    markup = str(svg.finished_chart([], datetime.now(UTC)))
    assert "<rect" not in markup
    assert "0 completed, 0 failed and 0 cancelled" in markup


def test_a_processors_schema_becomes_typed_fields() -> None:
    fields = {f.name: f for f in forms.fields_of(Report.model_json_schema())}
    assert fields["title"].kind == "text" and fields["title"].required
    assert fields["title"].help == "The report's title"
    assert fields["copies"].kind == "integer"
    assert fields["copies"].attrs == {"min": "1", "max": "10"}
    assert fields["copies"].value == "1"
    assert fields["ratio"].kind == "number"
    assert fields["mode"].kind == "select" and fields["mode"].choices == ("fast", "thorough")
    assert fields["dry_run"].kind == "boolean"
    assert fields["tags"].kind == "json" and fields["tags"].help == "JSON"


def test_posted_strings_become_the_configuration() -> None:
    schema = Report.model_json_schema()
    fields = forms.fields_of(schema)
    posted = {
        "config.title": "q3",
        "config.copies": "3",
        "config.ratio": "0.25",
        "config.mode": "thorough",
        "config.dry_run": "true",
        "config.tags": '["a", "b"]',
    }
    config = forms.config_from(fields, posted, schema)
    assert config == {
        "title": "q3",
        "copies": 3,
        "ratio": 0.25,
        "mode": "thorough",
        "dry_run": True,
        "tags": ["a", "b"],
    }
    assert Report.model_validate(config).copies == 3
    # Empty optional fields are left to the processor's defaults.
    assert forms.config_from(fields, {"config.title": "x"}, schema) == {
        "title": "x",
        "dry_run": False,
    }


@pytest.mark.parametrize(
    ("posted", "field"),
    [
        ({"config.copies": "three"}, "copies"),
        ({"config.ratio": "nan"}, "ratio"),
        ({"config.tags": "[oops"}, "tags"),
        ({}, "title"),
    ],
)
def test_input_that_cannot_be_shaped_names_its_field(posted: dict[str, str], field: str) -> None:
    schema = Report.model_json_schema()
    values = {"config.title": "t", **posted} if field != "title" else posted
    with pytest.raises(forms.FormErrors) as refused:
        forms.config_from(forms.fields_of(schema), values, schema)
    assert field in refused.value.errors


def test_task_options_come_from_the_form_or_default() -> None:
    options = forms.options_from(
        {"option.priority": "5", "option.queue": "reports", "option.start_in": "30"}
    )
    assert (options.priority, options.queue, options.start_in) == (5, "reports", 30.0)
    assert options.max_attempts is None and not options.inactive
    assert forms.options_from({"option.inactive": "true"}).inactive
    with pytest.raises(forms.FormErrors):
        forms.options_from({"option.timeout": "soon"})


def test_durations_and_times_read_at_a_glance() -> None:
    assert fmt.duration(0.25) == "250 ms"
    assert fmt.duration(12.5) == "12.5 s"
    assert fmt.duration(245) == "4 min 05 s"
    assert fmt.duration(3 * 3600 + 120) == "3 h 02 min"
    assert fmt.duration(3 * 86400) == "3 d 0 h"
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert fmt.ago(now - timedelta(seconds=90), now) == "1 min 30 s ago"
    assert fmt.ago(now + timedelta(seconds=5), now) == "in 5.0 s"
    assert fmt.status_label("PARTIAL_SUCCESS") == "partial success"
    assert fmt.pretty_json('{"b": 1, "a": 2}') == '{\n  "a": 2,\n  "b": 1\n}'
