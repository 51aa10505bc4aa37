"""Pictures drawn on the server as inline SVG: the finished-per-minute chart and a
pipeline's graph.

Drawn in Python rather than by a chart library in the browser: the page stays one
response, needs no script to show its numbers, and the pictures follow the page's colours
(dark mode included) through CSS classes, never inline styles (the dashboard's content
security policy allows none). Every mark carries a ``<title>`` (a tooltip, read by screen
readers), and each picture a text summary, so nothing is said by colour or shape alone.

The functions here are pure: values in, markup out. They are unit-tested without a server.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from nightcrew.values import MinuteCount

# ---------------------------------------------------------------- finished per minute

CHART_WIDTH = 960
CHART_HEIGHT = 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 8, 10, 26
MINUTES = 60


def _nice_ceiling(value: int) -> int:
    """The axis maximum: ``value`` rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 1:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def minute_buckets(counts: Sequence[MinuteCount], now: datetime) -> list[MinuteCount]:
    """The last `MINUTES` minutes ending with ``now``'s, oldest first, zeros filled in
    (the store leaves out minutes without a finish)."""
    last = now.replace(second=0, microsecond=0)
    by_minute = {c.minute.replace(second=0, microsecond=0): c for c in counts}
    buckets = []
    for back in range(MINUTES - 1, -1, -1):
        minute = last - timedelta(minutes=back)
        buckets.append(by_minute.get(minute, MinuteCount(minute)))
    return buckets


def finished_chart(counts: Sequence[MinuteCount], now: datetime) -> Markup:
    """A stacked bar per minute of the last hour: completed, failed, cancelled."""
    buckets = minute_buckets(counts, now)
    totals = [b.completed + b.error + b.cancelled for b in buckets]
    top = _nice_ceiling(max(totals, default=0))
    plot_w = CHART_WIDTH - _LEFT - _RIGHT
    plot_h = CHART_HEIGHT - _TOP - _BOTTOM
    bar_w = plot_w / MINUTES
    done = sum(b.completed for b in buckets)
    failed = sum(b.error for b in buckets)
    cancelled = sum(b.cancelled for b in buckets)
    busiest = max(totals, default=0)
    summary = (
        f"{done} completed, {failed} failed and {cancelled} cancelled in the last hour; "
        f"the busiest minute had {busiest}."
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        f'aria-labelledby="chart-title chart-desc" preserveAspectRatio="xMidYMid meet">',
        '<title id="chart-title">Tasks finished per minute, last hour</title>',
        f'<desc id="chart-desc">{escape(summary)}</desc>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{CHART_WIDTH - _RIGHT}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        label = f"{top * fraction:g}"
        parts.append(
            f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    for i, bucket in enumerate(buckets):
        total = totals[i]
        if total == 0:
            continue
        x = _LEFT + i * bar_w
        y = _TOP + plot_h
        tip = (
            f"{bucket.minute:%H:%M} UTC: {bucket.completed} completed, "
            f"{bucket.error} failed, {bucket.cancelled} cancelled"
        )
        parts.append(f"<g><title>{escape(tip)}</title>")
        for value, css in (
            (bucket.completed, "bar-ok"),
            (bucket.error, "bar-error"),
            (bucket.cancelled, "bar-cancelled"),
        ):
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect class="{css}" x="{x + 0.5:.1f}" y="{y:.1f}" '
                f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}"/>'
            )
        parts.append("</g>")
    base = CHART_HEIGHT - 8
    parts.append(f'<text class="axis" x="{_LEFT}" y="{base}">60 min ago</text>')
    parts.append(
        f'<text class="axis" x="{_LEFT + plot_w / 2:.1f}" y="{base}" '
        'text-anchor="middle">30 min</text>'
    )
    parts.append(
        f'<text class="axis" x="{CHART_WIDTH - _RIGHT}" y="{base}" text-anchor="end">now</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


# ---------------------------------------------------------------- pipeline graphs

NODE_W, NODE_H = 168, 46
GAP_X, GAP_Y = 56, 14
MARGIN = 12
#: A label longer than this is cut (the whole name stays in the node's title).
LABEL_CHARS = 20


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One step as the graph draws it."""

    id: int
    label: str
    status: str
    href: str
    progress: float | None = None


@dataclass(frozen=True, slots=True)
class Placed:
    node: GraphNode
    depth: int
    x: float
    y: float


def depths(ids: Sequence[int], edges: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Each node's layer: the length of the longest path of dependencies leading to it
    (sources are 0), by Kahn's topological order. Edges are ``(dependency, dependent)``;
    ones naming unknown nodes are ignored, and a cycle (a pipeline never has one) leaves
    its nodes at the depth reached so far instead of looping."""
    known = set(ids)
    children: dict[int, list[int]] = defaultdict(list)
    indegree = dict.fromkeys(ids, 0)
    for parent, child in edges:
        if parent in known and child in known:
            children[parent].append(child)
            indegree[child] += 1
    depth = dict.fromkeys(ids, 0)
    ready = [i for i in ids if indegree[i] == 0]
    while ready:
        current = ready.pop()
        for child in children[current]:
            depth[child] = max(depth[child], depth[current] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    return depth


def layout(nodes: Sequence[GraphNode], edges: Sequence[tuple[int, int]]) -> list[Placed]:
    """Left to right by depth; within a layer, nodes ordered by the mean position of their
    dependencies (the barycenter heuristic: few crossings for fan-out/fan-in shapes), then
    by id; shorter layers centred on the tallest."""
    node_depth = depths([n.id for n in nodes], edges)
    parents: dict[int, list[int]] = defaultdict(list)
    for parent, child in edges:
        parents[child].append(parent)
    layers: dict[int, list[GraphNode]] = defaultdict(list)
    for node in nodes:
        layers[node_depth[node.id]].append(node)
    position: dict[int, float] = {}
    ordered: dict[int, list[GraphNode]] = {}
    for depth in sorted(layers):

        def key(node: GraphNode) -> tuple[float, int]:
            seen = [position[p] for p in parents[node.id] if p in position]
            return (sum(seen) / len(seen) if seen else float(node.id), node.id)

        row = sorted(layers[depth], key=key)
        for index, node in enumerate(row):
            position[node.id] = float(index)
        ordered[depth] = row
    tallest = max((len(row) for row in ordered.values()), default=0)
    placed = []
    for depth, row in ordered.items():
        offset = (tallest - len(row)) * (NODE_H + GAP_Y) / 2
        for index, node in enumerate(row):
            x = MARGIN + depth * (NODE_W + GAP_X)
            y = MARGIN + offset + index * (NODE_H + GAP_Y)
            placed.append(Placed(node, depth, x, y))
    return placed


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def pipeline_graph(
    nodes: Sequence[GraphNode],
    edges: Sequence[tuple[int, int]],
    *,
    status_labels: Mapping[str, str] | None = None,
) -> Markup:
    """The pipeline's DAG: a box per step (its name, status and, while it runs, a progress
    line), an arrow per dependency; each box links to the step's task."""
    placed = layout(nodes, edges)
    where = {p.node.id: p for p in placed}
    width = max((p.x + NODE_W for p in placed), default=0) + MARGIN
    height = max((p.y + NODE_H for p in placed), default=0) + MARGIN
    labels = status_labels or {}
    parts = [
        f'<svg class="dag" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'role="group" aria-label="Pipeline graph: {len(placed)} steps">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path class="arrowhead" '
        'd="M 0 0 L 10 5 L 0 10 z"/></marker></defs>',
    ]
    for parent, child in edges:
        a, b = where.get(parent), where.get(child)
        if a is None or b is None:
            continue
        x1, y1 = a.x + NODE_W, a.y + NODE_H / 2
        x2, y2 = b.x - 2, b.y + NODE_H / 2
        bend = max((x2 - x1) / 2, 12)
        parts.append(
            f'<path class="edge" marker-end="url(#arrow)" d="M {x1:.1f} {y1:.1f} '
            f'C {x1 + bend:.1f} {y1:.1f} {x2 - bend:.1f} {y2:.1f} {x2:.1f} {y2:.1f}"/>'
        )
    for p in placed:
        node = p.node
        status = labels.get(node.status, node.status)
        name = f"{node.label}: {status}"
        if node.progress is not None and node.status == "WORKING":
            name += f", {node.progress:.0f}%"
        parts.append(
            f'<a href="{escape(node.href)}" aria-label="{escape(name)}" '
            f'class="node st-{escape(node.status)}" data-step="{escape(node.label)}">'
            f"<title>{escape(name)}</title>"
            f'<rect x="{p.x:.1f}" y="{p.y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text class="node-name" x="{p.x + 10:.1f}" y="{p.y + 19:.1f}">'
            f"{escape(_short(node.label))}</text>"
            f'<text class="node-status" x="{p.x + 10:.1f}" y="{p.y + 36:.1f}">'
            f"{escape(status)}</text>"
        )
        if node.progress is not None and node.status == "WORKING":
            full = NODE_W - 20
            done = full * max(0.0, min(node.progress, 100.0)) / 100
            parts.append(
                f'<rect class="node-track" x="{p.x + 10:.1f}" y="{p.y + NODE_H - 6:.1f}" '
                f'width="{full}" height="3"/>'
                f'<rect class="node-progress" x="{p.x + 10:.1f}" y="{p.y + NODE_H - 6:.1f}" '
                f'width="{done:.1f}" height="3"/>'
            )
        parts.append("</a>")
    parts.append("</svg>")
    return Markup("".join(parts))
