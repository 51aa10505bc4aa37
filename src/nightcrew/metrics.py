"""Prometheus metrics (through prometheus-client), one registry per `Nightcrew` app.

Two kinds of numbers, kept apart:

- **this process's** counters and histograms, moved by the task events its app's bus
  carries (a batch subscriber: one call per claim or batch of finishes, plain additions
  under one lock, so a drain pays about a microsecond per task); the runs in flight of the
  workers it hosts;
- **database-wide** gauges (open tasks per queue and status, the oldest due task's wait,
  pipelines, live workers, skipped schedule ticks), read by one query per scrape by a
  custom collector (`nightcrew.store.observe_ops.gauges`), never one query per label.

Counting starts when the metrics are first read (see `Metrics`), so a worker nobody
scrapes pays nothing for them. `Metrics.registry` has both kinds (the API's ``/metrics``);
`Metrics.process_registry` only the first (``nightcrew worker --metrics-port``: a fleet of
workers does not run the database query once per worker per scrape). Nothing is registered
in prometheus-client's default registry: two apps in one process keep two sets of numbers.

The metrics, for dashboards (labels in brackets):

========================================== ======= ====================================
``nightcrew_tasks_finished_total``          counter finished runs [processor, queue, status]
``nightcrew_task_retries_total``            counter attempts that failed and will retry
                                                    [processor, queue]
``nightcrew_task_rescues_total``            counter tasks handed back from a dead worker
                                                    [processor, queue]
``nightcrew_task_finish_rejected_total``    counter late outcomes refused (lease lost)
                                                    [processor, queue]
``nightcrew_task_duration_seconds``         hist.   run time of each attempt [processor, queue]
``nightcrew_task_pickup_latency_seconds``   hist.   started - max(start_at, created_at) [queue]
``nightcrew_tasks_in_progress``             gauge   runs in flight in this process [queue]
``nightcrew_schedule_ticks_enqueued_total`` counter tick tasks this process enqueued [schedule]
``nightcrew_queue_depth``                   gauge   open tasks (database) [queue, status]
``nightcrew_oldest_pending_age_seconds``    gauge   wait of the oldest due task [queue]
``nightcrew_pipelines``                     gauge   pipelines per status (database) [status]
``nightcrew_workers_alive``                 gauge   workers with a fresh heartbeat
``nightcrew_workers_in_flight``             gauge   their runs in flight (registry)
``nightcrew_schedule_ticks_skipped_total``  counter ticks not enqueued [schedule, reason]
``nightcrew_database_up``                   gauge   1 when the scrape's query succeeded
========================================== ======= ====================================
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from nightcrew.errors import ConfigurationError, DatabaseError
from nightcrew.events import EventBatch, EventBus, EventKind, TaskEvent
from nightcrew.models import MaintenanceTaskStatus
from nightcrew.store import observe_ops

if TYPE_CHECKING:
    from nightcrew.store import TaskStore

log = logging.getLogger("nightcrew.metrics")

#: Run times (seconds): no-ops to hour-long maintenance.
DURATION_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    *(2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
#: Pickup latency (seconds): an idle worker's milliseconds to a backlog's minutes.
PICKUP_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
    *(0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
#: The kinds the counters follow.
COUNTED_KINDS = (
    EventKind.CREATED,
    EventKind.STARTED,
    EventKind.COMPLETED,
    EventKind.FAILED,
    EventKind.RETRIED,
    EventKind.CANCELLED,
    EventKind.RESCUED,
    EventKind.FINISH_REJECTED,
)


#: Kinds `TaskEventCollector.on_events` counts by columns when an emission is all one
#: kind, queue and processor.
_COLUMN_KINDS = frozenset(
    {EventKind.STARTED, EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED}
)


class _Histogram:
    """Bucket counts and a sum: what a histogram is, updated with plain additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_all(self, values: Sequence[float]) -> None:
        """`observe` each of ``values`` (negatives as 0): sorted once, then one bisection
        per bucket, not per value (a claim's 500 pickups in a few microseconds)."""
        ordered = sorted(values)
        below = 0
        for i, bound in enumerate(self.bounds):
            upto = bisect.bisect_right(ordered, bound)
            self.counts[i] += upto - below
            below = upto
        self.counts[-1] += len(ordered) - below
        self.total += sum(ordered[bisect.bisect_right(ordered, 0.0) :])

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_le(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


Labels2 = tuple[str, str]


def _picked(column: Sequence[Any] | None, members: list[int] | None) -> Sequence[Any] | None:
    """A column's values of a group's ``members`` (None: all of them)."""
    if column is None or members is None:
        return column
    return [column[i] for i in members]


class TaskEventCollector(Collector):
    """This process's counters and histograms, moved by task events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.finished: dict[tuple[str, str, str], float] = {}
        self.retries: dict[Labels2, float] = {}
        self.rescues: dict[Labels2, float] = {}
        self.rejected: dict[Labels2, float] = {}
        self.ticks: dict[str, float] = {}
        self.durations: dict[Labels2, _Histogram] = {}
        self.pickups: dict[str, _Histogram] = {}
        self._in_flight: list[Callable[[], dict[str, int]]] = []

    def watch(self, busy_by_queue: Callable[[], dict[str, int]]) -> Callable[[], None]:
        """Count a worker's runs in flight (``busy_by_queue``) in the gauge until unwatched."""
        self._in_flight.append(busy_by_queue)

        def unwatch() -> None:
            if busy_by_queue in self._in_flight:
                self._in_flight.remove(busy_by_queue)

        return unwatch

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        # Hot: two events a task on a drain. A store's `EventBatch` (a claim, a batch of
        # completions) is counted by its columns, one group of queue and processor at a
        # time; another emission all of one kind, queue and processor by its transposed
        # fields; any other, event by event.
        if not events:
            return
        if isinstance(events, EventBatch):
            if events.kind in _COLUMN_KINDS:
                with self._lock:
                    for (queue, processor, _, _), members in events.groups():
                        self._count_columns(
                            events.kind,
                            events.status,
                            queue,
                            processor,
                            len(events) if members is None else len(members),
                            _picked(events.waited, members),
                            _picked(events.durations, members),
                        )
                return
            self._count_each(events)
            return
        fields = list(zip(*events, strict=True))
        kinds, statuses, queues, processors = fields[0], fields[3], fields[4], fields[5]
        kind = kinds[0]
        if kind in _COLUMN_KINDS and all(
            c.count(c[0]) == len(c) for c in (kinds, statuses, queues, processors)
        ):
            with self._lock:
                self._count_columns(
                    kind, statuses[0], queues[0], processors[0], len(events), fields[14], fields[9]
                )
            return
        self._count_each(events)

    def _count_columns(
        self,
        kind: EventKind,
        status: MaintenanceTaskStatus | None,
        queue: str | None,
        processor: str | None,
        count: int,
        waited: Sequence[float | None] | None,
        durations: Sequence[float | None] | None,
    ) -> None:
        if kind is EventKind.STARTED:
            waits = [w for w in waited if w is not None] if waited else None
            if waits:
                hist = self.pickups.get(queue or "")
                if hist is None:
                    hist = self.pickups[queue or ""] = _Histogram(PICKUP_BUCKETS)
                hist.observe_all(waits)
            return
        labels = (processor or "", queue or "")
        key = (labels[0], labels[1], status.value if status is not None else kind.value.upper())
        self.finished[key] = self.finished.get(key, 0.0) + count
        observed = [d for d in durations if d is not None] if durations else None
        if observed:
            hist = self.durations.get(labels)
            if hist is None:
                hist = self.durations[labels] = _Histogram(DURATION_BUCKETS)
            hist.observe_all(observed)

    def _count_each(self, events: Sequence[TaskEvent]) -> None:
        started, created = EventKind.STARTED, EventKind.CREATED
        finished_kinds = (EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED)
        with self._lock:
            finished, durations, pickups = self.finished, self.durations, self.pickups
            for e in events:
                kind = e.kind
                if kind is started:
                    if e.waited is not None:
                        queue = e.queue or ""
                        hist = pickups.get(queue)
                        if hist is None:
                            hist = pickups[queue] = _Histogram(PICKUP_BUCKETS)
                        hist.observe(max(0.0, e.waited))
                    continue
                labels = (e.processor or "", e.queue or "")
                if kind in finished_kinds:
                    status = e.status.value if e.status is not None else kind.value.upper()
                    key = (labels[0], labels[1], status)
                    finished[key] = finished.get(key, 0.0) + 1
                elif kind is EventKind.RETRIED:
                    self.retries[labels] = self.retries.get(labels, 0.0) + 1
                elif kind is EventKind.RESCUED:
                    self.rescues[labels] = self.rescues.get(labels, 0.0) + 1
                elif kind is EventKind.FINISH_REJECTED:
                    self.rejected[labels] = self.rejected.get(labels, 0.0) + 1
                    continue
                elif kind is created:
                    schedule = e.schedule or (e.detail or {}).get("schedule")
                    if isinstance(schedule, str):
                        self.ticks[schedule] = self.ticks.get(schedule, 0.0) + 1
                    continue
                if e.duration is not None:
                    hist = durations.get(labels)
                    if hist is None:
                        hist = durations[labels] = _Histogram(DURATION_BUCKETS)
                    hist.observe(e.duration)

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        with self._lock:
            finished = dict(self.finished)
            counters = [
                (name, doc, dict(values))
                for name, doc, values in (
                    ("nightcrew_task_retries", "Failed attempts to be retried.", self.retries),
                    ("nightcrew_task_rescues", "Tasks handed back (dead worker).", self.rescues),
                    ("nightcrew_task_finish_rejected", "Late outcomes refused.", self.rejected),
                )
            ]
            ticks = dict(self.ticks)
            durations = {k: (h.buckets(), h.total) for k, h in self.durations.items()}
            pickups = {k: (h.buckets(), h.total) for k, h in self.pickups.items()}
        family = CounterMetricFamily(
            "nightcrew_tasks_finished",
            "Tasks that finished (COMPLETED, ERROR, CANCELLED) as seen by this process.",
            labels=["processor", "queue", "status"],
        )
        for (processor, queue, status), value in sorted(finished.items()):
            family.add_metric([processor, queue, status], value)
        yield family
        for name, doc, values in counters:
            counter = CounterMetricFamily(name, doc, labels=["processor", "queue"])
            for (processor, queue), value in sorted(values.items()):
                counter.add_metric([processor, queue], value)
            yield counter
        tick_family = CounterMetricFamily(
            "nightcrew_schedule_ticks_enqueued",
            "Tasks this process enqueued for schedule ticks.",
            labels=["schedule"],
        )
        for schedule, value in sorted(ticks.items()):
            tick_family.add_metric([schedule], value)
        yield tick_family
        duration = HistogramMetricFamily(
            "nightcrew_task_duration_seconds",
            "How long each attempt ran.",
            labels=["processor", "queue"],
        )
        for (processor, queue), (buckets, total) in sorted(durations.items()):
            duration.add_metric([processor, queue], buckets, total)
        yield duration
        pickup = HistogramMetricFamily(
            "nightcrew_task_pickup_latency_seconds",
            "From when a task was due (max of start_at and created_at) to its start.",
            labels=["queue"],
        )
        for queue, (buckets, total) in sorted(pickups.items()):
            pickup.add_metric([queue], buckets, total)
        yield pickup
        in_progress = GaugeMetricFamily(
            "nightcrew_tasks_in_progress",
            "Runs in flight in this process's workers.",
            labels=["queue"],
        )
        busy: dict[str, int] = {}
        for read in list(self._in_flight):
            for queue, n in read().items():
                busy[queue] = busy.get(queue, 0) + n
        for queue, n in sorted(busy.items()):
            in_progress.add_metric([queue], n)
        yield in_progress


class DatabaseCollector(Collector):
    """The database-wide gauges, read by one query when scraped."""

    def __init__(self, store: TaskStore, dead_after: float) -> None:
        self.store = store
        self.dead_after = dead_after

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on the data; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "nightcrew_database_up", "1 when the scrape's database query succeeded."
        )
        try:
            g = self.store.run(observe_ops.gauges, self.dead_after)
        except DatabaseError as exc:
            log.warning("metrics: the database gauges could not be read: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        depth = GaugeMetricFamily(
            "nightcrew_queue_depth", "Open tasks per queue and status.", labels=["queue", "status"]
        )
        for (queue, status), value in sorted(g.depth.items()):
            depth.add_metric([queue, status], value)
        oldest = GaugeMetricFamily(
            "nightcrew_oldest_pending_age_seconds",
            "How long the oldest due PENDING task of each queue has waited.",
            labels=["queue"],
        )
        for queue, value in sorted(g.oldest_pending.items()):
            oldest.add_metric([queue], value)
        pipelines = GaugeMetricFamily(
            "nightcrew_pipelines", "Pipelines per status (their outcomes).", labels=["status"]
        )
        for status, value in sorted(g.pipelines.items()):
            pipelines.add_metric([status], value)
        workers = GaugeMetricFamily(
            "nightcrew_workers_alive", "Workers whose registry heartbeat is fresh."
        )
        workers.add_metric([], g.workers_alive)
        in_flight = GaugeMetricFamily(
            "nightcrew_workers_in_flight", "Runs in flight of the live workers (registry)."
        )
        in_flight.add_metric([], g.workers_in_flight)
        skipped = CounterMetricFamily(
            "nightcrew_schedule_ticks_skipped",
            "Schedule ticks not enqueued: misfired, or over max_instances.",
            labels=["schedule", "reason"],
        )
        for name, value in sorted(g.misfires.items()):
            skipped.add_metric([name, "misfire"], value)
        for name, value in sorted(g.skipped_instances.items()):
            skipped.add_metric([name, "max_instances"], value)
        return [up, depth, oldest, pipelines, workers, in_flight, skipped]


class Metrics:
    """An app's Prometheus registries and the collectors in them.

    Counting starts when the metrics are first read — a scrape (`exposition`), a metrics
    port (`serve_metrics`), or `registry` handed to a host's own endpoint — or `start`:
    a worker that nobody scrapes builds no event for them, so pays nothing. Counters start
    at zero then, as a restarted process's do. ``count_events`` False leaves the bus alone
    for good (``NIGHTCREW_METRICS=false``); the database gauges still answer a scrape.
    """

    def __init__(
        self,
        bus: EventBus,
        store: TaskStore,
        *,
        dead_after: float,
        count_events: bool = True,
    ) -> None:
        self.events = TaskEventCollector()
        self.database = DatabaseCollector(store, dead_after)
        self._process_registry = CollectorRegistry(auto_describe=False)
        self._registry = CollectorRegistry(auto_describe=False)
        process = ProcessCollector(registry=None)
        for registry in (self._process_registry, self._registry):
            registry.register(self.events)
            registry.register(process)
        self._registry.register(self.database)
        self._bus = bus
        self._count = count_events
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Count task events from now on (idempotent)."""
        if self._count and self._unsubscribe is None:
            self._unsubscribe = self._bus.subscribe_batches(self.events.on_events, COUNTED_KINDS)

    @property
    def counting(self) -> bool:
        return self._unsubscribe is not None

    @property
    def registry(self) -> CollectorRegistry:
        """Everything: this process's counters and the database's gauges."""
        self.start()
        return self._registry

    @property
    def process_registry(self) -> CollectorRegistry:
        """This process's counters only (what a worker's metrics port serves)."""
        self.start()
        return self._process_registry

    def watch(self, busy_by_queue: Callable[[], dict[str, int]]) -> Callable[[], None]:
        """Count a worker's runs in flight in ``nightcrew_tasks_in_progress``."""
        return self.events.watch(busy_by_queue)

    def exposition(self, *, database: bool = True) -> tuple[bytes, str]:
        """The text format and its content type (``database`` False: this process only)."""
        registry = self.registry if database else self.process_registry
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


def serve_metrics(metrics: Metrics, port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
    """Serve ``metrics.process_registry`` over HTTP on ``port`` (a worker's own metrics,
    from a thread of prometheus-client's); returns a function that stops the server."""
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=addr, registry=metrics.process_registry)
    except OSError as exc:  # the port is taken, or not ours to bind: one clear line
        raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: {exc.strerror}") from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(2.0)

    return stop
