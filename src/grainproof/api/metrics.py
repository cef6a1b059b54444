"""Prometheus metrics with prometheus-client: request latency histograms by route template and status,
verdicts by flag and variety, model build durations, and the reference's size at scrape time.

With several worker processes (`grainproof serve --workers N`) each process writes its samples to
files in PROMETHEUS_MULTIPROC_DIR (set by the parent before the workers start) and /metrics, answered
by any one worker, adds up every worker's files: prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

#: The media type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: prometheus-client picks multiprocess mode when it is imported, from this variable: so do we.
MULTIPROCESS = bool(os.environ.get(MULTIPROCESS_DIR))

#: Seconds: a health probe takes about a millisecond, a verification with photos up to a few seconds.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds: a model build takes from seconds (a small reference) to tens of minutes.
BUILD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


class _Gauges(Collector):
    """Point-in-time values read when scraped (e.g. how many reference lots are stored)."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        for name, value in sorted(self.read().items()):
            yield GaugeMetricFamily(name, name.removeprefix("grainproof_").replace("_", " ").capitalize() + ".", value)


class Metrics:
    """The service's metrics; one per Runtime, so that tests running several apps keep them apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "grainproof_http_request_duration_seconds",
            "Time spent answering HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.verdicts = Counter(
            "grainproof_verdicts",
            "Verdicts stored, by flag, species and variety.",
            ["flagged", "species", "variety"],
            registry=self.registry,
        )
        self.model_builds = Histogram(
            "grainproof_model_build_duration_seconds",
            "Time spent building reference model versions, by outcome (ready or failed).",
            ["outcome"],
            buckets=BUILD_BUCKETS,
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).observe(seconds)

    def observe_verdict(self, *, flagged: bool, species: str, variety: str) -> None:
        self.verdicts.labels("true" if flagged else "false", species, variety).inc()

    def observe_model_build(self, *, outcome: str, seconds: float) -> None:
        self.model_builds.labels(outcome).observe(seconds)

    def render(
        self, gauges: Callable[[], dict[str, float]] | None = None, alerts: Callable[[], AlertValues] | None = None
    ) -> bytes:
        """The exposition text: this process's metrics, or every worker's in multiprocess mode, plus `gauges` and
        the monitor's `alerts` (read from the database at scrape time, so every worker answers the same)."""
        scrape = CollectorRegistry()
        if MULTIPROCESS:
            MultiProcessCollector(scrape)
        else:
            scrape.register(_Registered(self.registry))
        if gauges is not None:
            scrape.register(_Gauges(gauges))
        if alerts is not None:
            scrape.register(_Alerts(alerts))
        return generate_latest(scrape)


#: The monitor's tests at scrape time: (labels, 1.0 when alerting else 0.0).
AlertValues = list[tuple[dict[str, str], float]]


class _Alerts(Collector):
    """grainproof_monitor_alert{kind, dimension, group}: 1 while the calibration monitor alerts for that group."""

    def __init__(self, read: Callable[[], AlertValues]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "grainproof_monitor_alert",
            "1 while the calibration monitor alerts for a group (flag rate above alpha, or too many "
            "low-confidence verdicts), 0 otherwise; acknowledged alerts restart their test.",
            labels=["kind", "dimension", "group"],
        )
        for labels, value in self.read():
            family.add_metric([labels["kind"], labels["dimension"], labels["group"]], value)
        yield family


class _Registered(Collector):
    """The metrics of another registry, so that one scrape can add scrape-time gauges to them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Times every HTTP request and counts it by route template and the status actually sent.

    It wraps the whole application, not one route: requests to unknown paths (404) and ones refused by
    the authentication middleware (401) are counted with their real status too.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before answering, the server answers 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            # The route template, not the raw path: ids in paths would make one series per verification.
            route = str(scope.get("path_template") or "unmatched")
            metrics: Metrics = scope["litestar_app"].state.runtime.metrics  # type: ignore[typeddict-item]
            metrics.observe_request(str(scope.get("method", "")), route, status, time.perf_counter() - started)

    return middleware
