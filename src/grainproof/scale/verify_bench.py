"""`grainproof bench verify`: the real service (uvicorn workers, the app factory) under concurrent load.

The server runs on a loopback port in its own processes with a real reference model, built and
activated through the API. Clients (asyncio, one keep-alive connection each) send
`POST /v1/verifications` with precomputed vectors, and with three photos, and `GET /health` of the
same server under the same load: the baseline, so the ratio shows what authentication, scoring,
photo embedding and storing cost.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.errors import GrainproofError
from grainproof.progress import ProgressCallback

LOOPBACK = "127.0.0.1"
#: Photos per lot in the photo scenario.
PHOTOS_PER_REQUEST = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    """Latency and throughput of one endpoint at one concurrency."""

    endpoint: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float


@dataclass(slots=True, kw_only=True)
class VerifyBench:
    """Figures of `grainproof bench verify` (also written as JSON)."""

    workers: int
    server: str
    database: str
    reference_lots: int
    dim: int
    backbone_id: str
    cpu_count: int
    results: list[LoadResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = self.ratios()
        return data

    def find(self, endpoint: str, concurrency: int) -> LoadResult | None:
        return next((r for r in self.results if r.endpoint == endpoint and r.concurrency == concurrency), None)

    def ratios(self) -> list[dict[str, Any]]:
        """p50, p99 and throughput of each verification scenario over the trivial endpoint at the same load."""
        rows = []
        for result in self.results:
            base = self.find("health", result.concurrency)
            if result.endpoint == "health" or base is None:
                continue
            rows.append(
                {
                    "endpoint": result.endpoint,
                    "concurrency": result.concurrency,
                    "p50_ratio": result.p50_ms / max(base.p50_ms, 1e-9),
                    "p99_ratio": result.p99_ms / max(base.p99_ms, 1e-9),
                    "throughput_ratio": result.throughput_per_s / max(base.throughput_per_s, 1e-9),
                }
            )
        return rows


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def summarise(endpoint: str, concurrency: int, latencies_s: Sequence[float], errors: int, seconds: float) -> LoadResult:
    """Percentiles (ms) and throughput of successful requests."""
    values = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if not len(values):
        raise GrainproofError(f"Every {endpoint} request failed ({errors} errors); see the server log above.")
    return LoadResult(
        endpoint=endpoint,
        concurrency=concurrency,
        requests=len(values),
        errors=errors,
        seconds=seconds,
        p50_ms=float(np.percentile(values, 50)),
        p99_ms=float(np.percentile(values, 99)),
        mean_ms=float(values.mean()),
        throughput_per_s=len(values) / seconds,
    )


RequestFactory = Callable[[int], dict[str, Any]]


class _LoadConnection:
    """One keep-alive HTTP/1.1 connection of a load client: writes prepared request bytes, reads the
    status and the body (Content-Length or chunked).

    The clients share the server's two cores, and httpx's client took about 0.6 ms of CPU per request
    (a whole /health request costs the server 0.2 ms); this takes a small fraction of that, so less of
    the machine goes to measuring. Requests are still built by httpx (`_raw_request`).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, raw: bytes) -> int:
        """The response status of one request (its body is read and dropped)."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(raw)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")  # the last chunk's end (no trailers are sent)
        if "close" in headers.get("connection", ""):
            self.close()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def _raw_request(host: str, request: dict[str, Any]) -> bytes:
    """The bytes of one request given as httpx.Request arguments (httpx writes the headers and bodies)."""
    import httpx

    built = httpx.Request(url=f"http://{host}{request['url']}", **{k: v for k, v in request.items() if k != "url"})
    body = built.read()
    lines = [f"{built.method} {built.url.raw_path.decode('ascii')} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in built.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def run_load(
    base_url: str,
    endpoint: str,
    make_request: RequestFactory,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> LoadResult:
    """`concurrency` clients, one connection each, sending requests back to back until `duration_s` or
    `max_requests` is reached; a request counts from writing it to reading the whole response."""
    from urllib.parse import urlsplit

    address = urlsplit(base_url)
    host, port = address.hostname or LOOPBACK, address.port or 80
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal errors, issued
        connection = _LoadConnection(host, port)
        try:
            while time.perf_counter() < deadline and issued < max_requests:
                issued += 1
                raw = _raw_request(f"{host}:{port}", make_request(issued))
                start = time.perf_counter()
                try:
                    async with asyncio.timeout(120.0):
                        ok = await connection.send(raw) < 300
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                    connection.close()
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return summarise(endpoint, concurrency, latencies, errors, elapsed)


def _reference_manifest(
    *, species: str, lots: Sequence[tuple[str, str, str, int, np.ndarray]], backbone_id: str
) -> str:
    """Manifest CSV text of reference lots (variety, region, season, vector) with f_* and backbone columns."""
    from grainproof.manifest import feature_columns

    dim = len(lots[0][4])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["lot_id", "species", "variety", "region", "harvest_date", "backbone", *feature_columns(dim)])
    for lot_id, variety, region, season, vector in lots:
        writer.writerow(
            [lot_id, species, variety, region, f"{season}-07-20", backbone_id, *(f"{v:.6g}" for v in vector)]
        )
    return buffer.getvalue()


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchWorld:
    """What the requests are made of: claims, lot vectors in the embedder's space, and photo files."""

    species: str
    claims: list[dict[str, Any]]  # one per simulated lot: variety, origin, harvest date
    vectors: list[np.ndarray]
    photos: list[list[bytes]]
    backbone_id: str
    reference_manifest: str
    reference_lots: int


def make_bench_world(
    directory: Path, *, reference_lots: int, seed: int, progress: ProgressCallback | None
) -> BenchWorld:
    """Simulate a few lots (phone photos), embed them, and spread reference lots around their vectors.

    The reference lots are the simulated lots' vectors plus noise at their declared regions: a real
    model in the embedder's space, so photo claims are scored against real structure.
    """
    from grainproof.embed import get_embedder
    from grainproof.embed.batch import embed_lots
    from grainproof.manifest import read_manifest
    from grainproof.simulate import WorldConfig, simulate_world

    summary = simulate_world(
        WorldConfig(lots=8, photos_per_lot=PHOTOS_PER_REQUEST, seed=seed, fraud_rate=0.0, species=("soft_wheat",)),
        directory / "world",
    )
    lots = read_manifest(summary.lots_csv)
    embedder = get_embedder()
    embedded = embed_lots(lots, summary.lots_csv.parent, embedder=embedder, progress=progress)
    rng = np.random.default_rng(seed)
    vectors = [embedded[lot.lot_id].vector.astype(np.float64) for lot in lots]
    spread = float(np.std(np.stack(vectors), axis=0).mean()) or 1.0
    reference: list[tuple[str, str, str, int, np.ndarray]] = []
    for i in range(reference_lots):
        lot = lots[i % len(lots)]
        season = lot.claim.season or 2024
        vector = vectors[i % len(lots)] + rng.normal(0.0, 0.5 * spread, len(vectors[0]))
        reference.append((f"bench-ref-{i:06d}", lot.claim.variety, str(lot.claim.origin.region), season, vector))
    claims = [
        {
            "species": lot.claim.species,
            "variety": lot.claim.variety,
            "origin": {"region": lot.claim.origin.region},
            "harvest_date": lot.claim.harvest_date.isoformat() if lot.claim.harvest_date else None,
        }
        for lot in lots
    ]
    photos = [[(summary.lots_csv.parent / p).read_bytes() for p in lot.photos] for lot in lots]
    return BenchWorld(
        species=lots[0].claim.species,
        claims=claims,
        vectors=vectors,
        photos=photos,
        backbone_id=embedder.backbone_id,
        reference_manifest=_reference_manifest(
            species=lots[0].claim.species, lots=reference, backbone_id=embedder.backbone_id
        ),
        reference_lots=reference_lots,
    )


def _create_keys(data_dir: Path, database_url: str | None) -> dict[str, str]:
    from grainproof.settings import Settings
    from grainproof.store.database import create_db_engine, session_scope, upgrade
    from grainproof.store.keys import create_key

    settings = Settings(data_dir=data_dir, database_url=database_url)
    engine = create_db_engine(settings)
    try:
        upgrade(engine)
        with session_scope(engine) as session:
            _, admin = create_key(session, role="admin", name="bench admin")
            _, intake = create_key(session, role="intake", name="bench intake")
    finally:
        engine.dispose()
    return {"admin": admin, "intake": intake}


#: How the service is run: our SO_REUSEPORT workers (`grainproof serve --workers`) or `uvicorn --workers`.
SERVERS = ("grainproof", "uvicorn")


class ServerProcess:
    """The service's worker processes on a loopback port (see grainproof.scale.server), stopped on exit."""

    def __init__(
        self, *, data_dir: Path, database_url: str | None, workers: int, threads_per_worker: int, server: str
    ) -> None:
        self.port = free_loopback_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        env = {
            **os.environ,
            "GRAINPROOF_DATA_DIR": str(data_dir),
            "GRAINPROOF_TORCH_THREADS": str(threads_per_worker),
            "OMP_NUM_THREADS": str(threads_per_worker),
        }
        env.pop("GRAINPROOF_DATABASE_URL", None)
        if database_url:
            env["GRAINPROOF_DATABASE_URL"] = database_url
        self.log = open(data_dir / "server.log", "w+b")  # noqa: SIM115 - closed in stop()
        if server == "uvicorn":
            command = [sys.executable, "-m", "uvicorn", "grainproof.api:create_app", "--factory", "--host", LOOPBACK]
            command += [
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
        else:
            command = [sys.executable, "-m", "grainproof.scale.server", "--host", LOOPBACK, "--port", str(self.port)]
            command += ["--workers", str(workers), "--log-level", "warning"]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GrainproofError(f"The service exited at start-up:\n{self.tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise GrainproofError(f"The service did not answer /health within {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def _activate_reference(base_url: str, admin_key: str, manifest: str, timeout_s: float = 600.0) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=300.0) as client:
        imported = client.post(
            "/v1/reference-lots/import", content=manifest.encode(), headers={"Content-Type": "text/csv"}
        )
        if imported.status_code != 201:
            raise GrainproofError(f"Importing the bench reference failed: {imported.text[:500]}")
        build = client.post("/v1/reference-models", json={"seed": 0})
        if build.status_code != 202:
            raise GrainproofError(f"Building the bench model failed: {build.text[:500]}")
        model_id = build.json()["id"]
        deadline = time.monotonic() + timeout_s
        while True:
            view = client.get(f"/v1/reference-models/{model_id}").json()
            if view["status"] == "ready":
                break
            if view["status"] == "failed" or time.monotonic() > deadline:
                raise GrainproofError(f"The bench model did not build: {view}")
            time.sleep(0.2)
        activated = client.post(f"/v1/reference-models/{model_id}/activate")
        if activated.status_code != 200:
            raise GrainproofError(f"Activating the bench model failed: {activated.text[:500]}")


def _request_factories(world: BenchWorld, intake_key: str, run_tag: str) -> dict[str, RequestFactory]:
    headers = {"Authorization": f"Bearer {intake_key}"}
    json_headers = {**headers, "Content-Type": "application/json"}
    # The vectors' JSON text is encoded once: the clients share the server's cores, and encoding
    # 1 280 floats per request cost them about as much CPU as a whole /health request.
    vectors_json = [json.dumps([float(v) for v in vector]) for vector in world.vectors]

    def claim(i: int, kind: str) -> dict[str, Any]:
        base = world.claims[i % len(world.claims)]
        return {**{k: v for k, v in base.items() if v is not None}, "lot_id": f"bench-{run_tag}-{kind}-{i:07d}"}

    def health(_: int) -> dict[str, Any]:
        return {"method": "GET", "url": "/health"}

    def vectors(i: int) -> dict[str, Any]:
        body = (
            f'{{"claim": {json.dumps(claim(i, "vectors"))}, "vectors": {vectors_json[i % len(world.vectors)]}, '
            f'"backbone_id": {json.dumps(world.backbone_id)}}}'
        )
        return {"method": "POST", "url": "/v1/verifications/", "content": body.encode(), "headers": json_headers}

    def photos(i: int) -> dict[str, Any]:
        # A few bytes after the JPEG end marker make every upload new content: no embedding-cache hits.
        files = [
            ("photos", (f"photo{k}.jpg", data + f"bench-{run_tag}-{i}-{k}".encode(), "image/jpeg"))
            for k, data in enumerate(world.photos[i % len(world.photos)])
        ]
        return {
            "method": "POST",
            "url": "/v1/verifications/",
            "files": files,
            "data": {"claim": json.dumps(claim(i, "photos"))},
            "headers": headers,
        }

    return {"health": health, "vectors": vectors, "photos": photos}


def run_verify_bench(
    *,
    concurrencies: Sequence[int] = (1, 8, 32),
    duration_s: float = 8.0,
    max_requests: int = 2000,
    photo_duration_s: float = 20.0,
    workers: int = 2,
    reference_lots: int = 2000,
    with_photos: bool = True,
    database_url: str | None = None,
    server: str = "grainproof",
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> VerifyBench:
    """Start the service, build and activate a reference through the API, then load it endpoint by endpoint."""
    if workers < 1 or not concurrencies or min(concurrencies) < 1:
        raise GrainproofError("--workers and every --concurrency must be at least 1.")
    if server not in SERVERS:
        raise GrainproofError(f"--server {server!r} is not known; use {' or '.join(SERVERS)}.")
    cpu_count = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="grainproof-bench-verify-") as scratch:
        root = Path(scratch)
        world = make_bench_world(root, reference_lots=reference_lots, seed=seed, progress=None)
        data_dir = root / "data"
        data_dir.mkdir()
        keys = _create_keys(data_dir, database_url)
        service = ServerProcess(
            data_dir=data_dir,
            database_url=database_url,
            workers=workers,
            threads_per_worker=max(1, cpu_count // workers),
            server=server,
        )
        bench = VerifyBench(
            workers=workers,
            server=server,
            database="postgresql" if database_url else "sqlite",
            reference_lots=reference_lots,
            dim=len(world.vectors[0]),
            backbone_id=world.backbone_id,
            cpu_count=cpu_count,
        )
        try:
            service.wait_ready()
            _activate_reference(service.base_url, keys["admin"], world.reference_manifest)
            factories = _request_factories(world, keys["intake"], run_tag=str(time.time_ns()))
            endpoints = ["health", "vectors", *(["photos"] if with_photos else [])]
            # Warm-up: every worker loads the model (and the embedder) before anything is timed.
            for endpoint in endpoints:
                asyncio.run(
                    run_load(
                        service.base_url,
                        f"warm-{endpoint}",
                        factories[endpoint],
                        concurrency=2 * workers,
                        duration_s=60.0,
                        max_requests=4 * workers,
                    )
                )
            total = len(endpoints) * len(concurrencies)
            for concurrency in concurrencies:
                for endpoint in endpoints:
                    result = asyncio.run(
                        run_load(
                            service.base_url,
                            endpoint,
                            factories[endpoint],
                            concurrency=concurrency,
                            duration_s=photo_duration_s if endpoint == "photos" else duration_s,
                            max_requests=max_requests,
                        )
                    )
                    bench.results.append(result)
                    if progress:
                        progress(len(bench.results), total)
        except GrainproofError:
            raise
        except Exception as exc:
            raise GrainproofError(f"The verify benchmark failed ({exc}); server log:\n{service.tail()}") from exc
        finally:
            service.stop()
    return bench
