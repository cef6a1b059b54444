"""`grainproof serve --workers N`: several uvicorn workers share one port, report their metrics together,
and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grainproof.errors import GrainproofError
from grainproof.scale.server import listening_socket
from grainproof.scale.verify_bench import free_loopback_port


def test_worker_sockets_share_a_port_and_keep_their_tcp_protocol() -> None:
    port = free_loopback_port()
    first, second = listening_socket("127.0.0.1", port), listening_socket("127.0.0.1", port)
    try:
        # asyncio sets TCP_NODELAY on accepted connections only for sockets that say IPPROTO_TCP.
        assert first.proto == second.proto == socket.IPPROTO_TCP
    finally:
        first.close()
        second.close()


def test_a_port_held_by_another_program_is_a_clear_error() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(GrainproofError, match="choose another --port"):
            listening_socket("127.0.0.1", other.getsockname()[1])


@pytest.mark.slow
def test_serve_with_two_workers_answers_counts_every_request_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_loopback_port()
    env = {**os.environ, "GRAINPROOF_DATA_DIR": str(tmp_path / "data")}
    env.pop("GRAINPROOF_DATABASE_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    grainproof = str(Path(sys.executable).with_name("grainproof"))
    created = subprocess.run(
        [grainproof, "keys", "create", "--role", "admin"], env=env, capture_output=True, text=True, check=True
    )
    admin = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    process = subprocess.Popen(
        [grainproof, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert all(client.get("/health").json() == {"status": "ok"} for _ in range(20))
            assert client.get("/ready").json()["status"] == "ready"
        # A new connection each: the kernel spreads them over both workers.
        refused = [httpx.get(f"http://127.0.0.1:{port}/v1/verifications").status_code for _ in range(20)]
        assert set(refused) == {401}
        for _ in range(6):  # whichever worker answers the scrape adds up both workers' counts
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=admin).text
            counts = {
                tuple(sorted(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "grainproof_http_request_duration_seconds_count"
            }
            assert counts[(("method", "GET"), ("route", "/v1/verifications"), ("status", "401"))] == 20
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
