"""OpenTelemetry: with a tracer provider set up, each task run is a span carrying the task
id, processor, queue and attempt; a failed run's span records the error."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from nightcrew import Nightcrew, create_maintenance_task
from nightcrew.models import MaintenanceTaskStatus
from tests.conftest import Backend
from tests.helpers import wait_for_status
from tests.observe.conftest import observe_settings
from tests.processors import Boom, Echo

S = MaintenanceTaskStatus


def _exporter() -> InMemorySpanExporter:
    """The process's provider (OpenTelemetry allows setting it once) with an exporter."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_each_run_is_a_span_with_the_tasks_attributes(backend: Backend) -> None:
    exporter = _exporter()
    app = Nightcrew(observe_settings(backend))
    try:
        ok = create_maintenance_task(Echo(), database=app, queue="traced")
        bad = create_maintenance_task(Boom(), database=app, queue="traced", max_attempts=1)
        worker = app.worker(concurrency=2)
        run = asyncio.create_task(worker.run())
        try:
            await wait_for_status(app.store, ok.id, S.COMPLETED, worker=run)
            await wait_for_status(app.store, bad.id, S.ERROR, worker=run)
        finally:
            worker.request_stop()
            await asyncio.wait_for(run, 60)
    finally:
        await app.aclose()
    spans = {
        span.attributes["nightcrew.task_id"]: span
        for span in exporter.get_finished_spans()
        if span.attributes and span.attributes.get("nightcrew.queue") == "traced"
    }
    assert set(spans) == {ok.id, bad.id}
    good = spans[ok.id]
    assert good.name == "nightcrew.run Echo"
    assert good.attributes is not None
    assert good.attributes["nightcrew.processor"] == Echo.class_path()
    assert good.attributes["nightcrew.attempt"] == 1
    assert spans[bad.id].status.status_code is StatusCode.ERROR
