"""`grainproof serve --workers N`: several uvicorn workers share one port and stop cleanly on SIGTERM."""

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
def test_serve_with_two_workers_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_loopback_port()
    env = {**os.environ, "GRAINPROOF_DATA_DIR": str(tmp_path / "data")}
    env.pop("GRAINPROOF_DATABASE_URL", None)
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("grainproof")), "serve", "--port", str(port), "--workers", "2"],
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
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
