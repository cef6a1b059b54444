"""Prometheus text-format metrics: request counts and latencies per route, verifications by outcome.

Kept in-process (no prometheus_client dependency); each worker process reports its own counters.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from litestar.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """Thread-safe counters and sums, rendered in the Prometheus exposition format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.verifications: dict[str, int] = defaultdict(int)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1
            self.latency_sum[(method, route)] += seconds
            self.latency_count[(method, route)] += 1

    def observe_verification(self, *, flagged: bool) -> None:
        with self._lock:
            self.verifications["flagged" if flagged else "accepted"] += 1

    def render(self, gauges: dict[str, float] | None = None) -> str:
        """The exposition text; `gauges` adds point-in-time values (e.g. reference lot count)."""
        lines = [
            "# HELP grainproof_http_requests_total HTTP requests by method, route and status.",
            "# TYPE grainproof_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), count in sorted(self.requests.items()):
                labels = f'method="{method}",route="{_escape(route)}",status="{status}"'
                lines.append(f"grainproof_http_requests_total{{{labels}}} {count}")
            lines += [
                "# HELP grainproof_http_request_duration_seconds Time spent answering requests.",
                "# TYPE grainproof_http_request_duration_seconds summary",
            ]
            for (method, route), total in sorted(self.latency_sum.items()):
                labels = f'method="{method}",route="{_escape(route)}"'
                lines.append(f"grainproof_http_request_duration_seconds_sum{{{labels}}} {total:.6f}")
                count = self.latency_count[(method, route)]
                lines.append(f"grainproof_http_request_duration_seconds_count{{{labels}}} {count}")
            lines += [
                "# HELP grainproof_verifications_total Verifications stored, by outcome.",
                "# TYPE grainproof_verifications_total counter",
            ]
            for outcome in ("accepted", "flagged"):
                lines.append(f'grainproof_verifications_total{{outcome="{outcome}"}} {self.verifications[outcome]}')
        for name, value in sorted((gauges or {}).items()):
            lines += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware timing each HTTP request and counting it by route template and status."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            # The route template, not the raw path: ids in paths would make one series per verification.
            route = str(scope.get("path_template") or "unmatched")  # type: ignore[typeddict-item]
            metrics: Metrics = scope["litestar_app"].state.runtime.metrics
            metrics.observe_request(str(scope.get("method", "")), route, status, time.perf_counter() - started)

    return middleware
