"""Serving the API with several worker processes: each binds its own SO_REUSEPORT socket and runs uvicorn.

Why not `uvicorn --workers`: under it every response waits about 40 ms for the client's delayed ACK
(`grainproof bench verify --server uvicorn`: /health p50 44 ms, against 0.9 ms here). asyncio sets
TCP_NODELAY on accepted connections only when the listening socket says IPPROTO_TCP, which uvicorn's
workers evidently do not get (docs/operations.md has the measurements). Here each worker creates its own
TCP socket (IPPROTO_TCP, SO_REUSEPORT: the kernel spreads connections over the workers), and the parent
restarts a worker that dies.

Metrics: the parent gives the workers one folder for prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, a fresh temporary one unless the operator set it, emptied at start), so
/metrics, answered by whichever worker the kernel picks, adds up every worker's samples.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import FrameType

from grainproof.errors import GrainproofError

logger = logging.getLogger("grainproof.serve")

APP = "grainproof.api:create_app"
#: prometheus-client's multiprocess mode: the folder every worker writes its samples to.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP listening socket that several processes can bind together (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if not hasattr(socket, "SO_REUSEPORT"):
        sock.close()
        raise GrainproofError("This system has no SO_REUSEPORT; run with --workers 1 behind a process manager.")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GrainproofError(f"Cannot listen on {host}:{port} ({exc.strerror}); choose another --port.") from None
    sock.listen(2048)
    return sock


def _run_worker(app: str, factory: bool, host: str, port: int, log_level: str, access_log: bool) -> None:
    import uvicorn

    sock = listening_socket(host, port)
    config = uvicorn.Config(app, factory=factory, log_level=log_level, access_log=access_log, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def prepare_metrics_dir() -> tuple[Path, bool]:
    """The workers' shared metrics folder, emptied, set in the environment they inherit; and whether it is ours.

    Counts left there by an earlier run would be added to this one's, so the folder starts empty.
    """
    given = os.environ.get(MULTIPROCESS_DIR)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="grainproof-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_DIR] = str(folder)
    return folder, given is None


def serve_workers(
    *,
    host: str,
    port: int,
    workers: int,
    app: str = APP,
    factory: bool = True,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Run `workers` uvicorn processes of the app (factory, by import path) on host:port until SIGINT/SIGTERM."""
    if workers < 1:
        raise GrainproofError(f"--workers must be at least 1 (got {workers}).")
    listening_socket(host, port).close()  # fail here, with a sentence, if the port is taken
    metrics_dir, own_metrics_dir = prepare_metrics_dir()
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_run_worker, args=(app, factory, host, port, log_level, access_log), daemon=False
        )
        process.start()
        return process

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start() for _ in range(workers)]
    try:
        while not stopping:
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    logger.warning("worker %s exited with %s; starting a new one", process.pid, process.exitcode)
                    _forget_worker(process.pid)
                    processes[i] = start()
            time.sleep(0.5)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # uvicorn shuts down gracefully on SIGTERM
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if own_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(MULTIPROCESS_DIR, None)


def _forget_worker(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the shared metrics (its counters and histograms stay counted)."""
    from prometheus_client import multiprocess

    if pid is not None:
        multiprocess.mark_process_dead(pid)


def _main(argv: list[str]) -> None:
    """`python -m grainproof.scale.server --host H --port P --workers N` (what `grainproof serve --workers` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m grainproof.scale.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    serve_workers(host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
