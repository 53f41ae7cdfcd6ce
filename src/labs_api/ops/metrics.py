"""Prometheus metrics: HTTP traffic, chat tokens and time to first token, the chat engines'
queues, model loading, and the process (memory, CPU, open files) from prometheus-client.

Each app has its own :class:`prometheus_client.CollectorRegistry`, so several apps in one
process (tests) never share or clash over series.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from labs_api.models import ModelRegistry

log = logging.getLogger("labs_api.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every series the server exports, and the observers that feed them."""

    def __init__(self, models: ModelRegistry) -> None:
        self.prometheus = CollectorRegistry()
        registry = self.prometheus
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        labels = ["method", "endpoint", "status"]
        self.requests = Counter(
            "labs_http_requests", "HTTP requests answered, by route template and status",
            labels, registry=registry)
        self.errors = Counter(
            "labs_http_request_errors", "HTTP requests answered with a status of 400 or more",
            labels, registry=registry)
        self.latency = Histogram(
            "labs_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response (whole stream)",
            labels, buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge(
            "labs_http_requests_in_flight", "HTTP requests being served now", registry=registry)
        self.prompt_tokens = Counter(
            "labs_chat_prompt_tokens",
            "Prompt tokens of finished generations (a prompt run for n choices counts n times)",
            ["model"],
            registry=registry)
        self.completion_tokens = Counter(
            "labs_chat_completion_tokens", "Tokens generated (chat and legacy completions)",
            ["model"], registry=registry)
        self.time_to_first_token = Histogram(
            "labs_chat_time_to_first_token_seconds",
            "From submitting a request's generations to their first tokens (queue wait included)",
            ["model"], buckets=FIRST_TOKEN_BUCKETS, registry=registry)
        registry.register(ModelCollector(models))

    def observe_request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        labels = (method, endpoint, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)
        if status >= 400:
            self.errors.labels(*labels).inc()

    # A GenerationObserver (labs_api.ops.context): the chat engines' generations report here.
    def first_token(self, model_id: str, seconds: float) -> None:
        self.time_to_first_token.labels(model_id).observe(seconds)

    def finished(self, model_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.labels(model_id).inc(prompt_tokens)
        self.completion_tokens.labels(model_id).inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.prometheus)


class ModelCollector(Collector):
    """Read at scrape time: each model's state and load time, each chat engine's busy slots and
    queue (engines with a ``scheduler`` that counts them), and GPU memory when torch uses CUDA."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily("labs_model_ready", "1 once the model is loaded, else 0",
                                  labels=["model", "kind"])
        load = GaugeMetricFamily("labs_model_load_seconds", "Seconds the model took to load",
                                 labels=["model", "kind"])
        active = GaugeMetricFamily("labs_chat_slots_active",
                                   "Chat generation slots decoding a request now",
                                   labels=["model"])
        waiting = GaugeMetricFamily("labs_chat_requests_waiting",
                                    "Chat requests queued for a free generation slot",
                                    labels=["model"])
        restarts = CounterMetricFamily(
            "labs_engine_restarts", "Times a model's engine worker was started again after it "
            "crashed or stalled", labels=["model", "kind"])
        messages = CounterMetricFamily(
            "labs_engine_ipc_messages", "Messages from a model's engine worker to the server",
            labels=["model", "kind"])
        events = CounterMetricFamily(
            "labs_engine_ipc_events", "Events (tokens, results) those messages carried",
            labels=["model", "kind"])
        thread_events = CounterMetricFamily(
            "labs_engine_ipc_thread_events", "Of those events, the ones the engine's own "
            "thread sent (a streamed token that woke no event loop in the worker)",
            labels=["model", "kind"])
        changes = CounterMetricFamily(
            "labs_model_state_changes", "Times a model entered a state (unloaded, loading, "
            "loaded, failed)", labels=["model", "kind", "state"])
        for (model, kind, state), count in sorted(self.models.transitions.items()):
            changes.add_metric([model, kind, state], float(count))
        memory = GaugeMetricFamily("labs_model_memory_bytes", "Resident memory of a loaded "
                                   "model's engine worker", labels=["model", "kind"])
        loaded = GaugeMetricFamily("labs_models_loaded", "Models loaded now")
        loaded.add_metric([], float(sum(1 for s in self.models.slots if s.state == "ready")))
        for slot in self.models.slots:
            if slot.state == "ready" and (held := self.models.memory(slot)):
                memory.add_metric([slot.model_id, slot.kind], float(held))
            if slot.worker is not None:
                restarts.add_metric([slot.model_id, slot.kind], float(slot.restarts))
                messages.add_metric([slot.model_id, slot.kind], float(slot.worker.frames))
                events.add_metric([slot.model_id, slot.kind], float(slot.worker.events))
                thread_events.add_metric([slot.model_id, slot.kind],
                                         float(slot.worker.thread_events))
            ready.add_metric([slot.model_id, slot.kind], 1.0 if slot.state == "ready" else 0.0)
            if slot.load_seconds is not None:
                load.add_metric([slot.model_id, slot.kind], slot.load_seconds)
            stats = getattr(slot.engine, "queue_stats", None)
            if slot.kind == "chat" and stats is not None:
                try:
                    counts = stats()
                except Exception:  # the scheduler thread changed its lists under us
                    log.debug("could not read the queue of %s", slot.model_id, exc_info=True)
                    counts = None
                if counts is not None:
                    active.add_metric([slot.model_id], float(counts[0]))
                    waiting.add_metric([slot.model_id], float(counts[1]))
        yield from (ready, load, active, waiting, restarts, messages, events, thread_events,
                    changes, memory, loaded)
        yield from gpu_memory()


def gpu_memory() -> Iterator[GaugeMetricFamily]:
    """CUDA memory held by torch, per device; nothing when torch is not loaded or has no GPU
    (torch is never imported here just to look)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        allocated = GaugeMetricFamily("labs_gpu_memory_allocated_bytes",
                                      "GPU memory held by tensors", labels=["device"])
        reserved = GaugeMetricFamily("labs_gpu_memory_reserved_bytes",
                                     "GPU memory reserved by torch's caching allocator",
                                     labels=["device"])
        for index in range(torch.cuda.device_count()):
            allocated.add_metric([str(index)], float(torch.cuda.memory_allocated(index)))
            reserved.add_metric([str(index)], float(torch.cuda.memory_reserved(index)))
    except Exception:
        log.debug("could not read GPU memory", exc_info=True)
        return
    yield allocated
    yield reserved


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    exported: Metrics = request.app.state.metrics
    return Response(exported.render(), media_type=CONTENT_TYPE_LATEST)
