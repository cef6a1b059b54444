"""The load client of `grainproof bench verify`: keep-alive requests with bodies, Content-Length and
chunked responses, and failures counted as errors rather than latencies."""

from __future__ import annotations

import asyncio
from typing import Any

from grainproof.scale.verify_bench import LOOPBACK, run_load


async def _serve(received: list[bytes]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            lines = head.decode("latin-1").lower().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            received.append(body)
            path = lines[0].split(" ")[1]
            if path == "/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            elif path == "/fail":
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\nno")
            else:
                writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, LOOPBACK, 0)


def _request(i: int) -> dict[str, Any]:
    if i % 5 == 0:
        return {"method": "GET", "url": "/fail"}
    if i % 2:
        return {"method": "POST", "url": "/echo", "content": b"x" * (1000 * i), "headers": {"X-Test": "1"}}
    return {"method": "GET", "url": "/chunked"}


def test_every_request_is_answered_on_kept_connections_and_failures_are_errors() -> None:
    received: list[bytes] = []

    async def main() -> Any:
        server = await _serve(received)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await run_load(
                f"http://{LOOPBACK}:{port}", "test", _request, concurrency=3, duration_s=30.0, max_requests=20
            )

    result = asyncio.run(main())
    assert (result.requests, result.errors) == (16, 4)  # requests 5, 10, 15 and 20 answer 500
    assert sorted(len(body) for body in received if body) == [1000 * i for i in range(1, 21, 2) if i % 5]
