"""A constant-answer HTTP/1.1 server, to measure the load generator's own ceiling.

``python -m bench.constserver HOST PORT`` answers every request, whatever its
method and path, with the same small JSON 200, keeping connections alive. It
does no routing, parsing or JSON work beyond finding where a request ends
(headers + ``Content-Length`` body), so it costs far less per request than the
client: the throughput the load generator reaches against it is the client's
ceiling.
"""

from __future__ import annotations

import asyncio
import signal
import sys

BODY = b'{"ok": true}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


def request_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Offset just past the first complete request in ``buf[start:]``, or -1."""
    head_end = buf.find(b"\r\n\r\n", start)
    if head_end < 0:
        return -1
    length = 0
    for line in bytes(buf[start:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    end = head_end + 4 + length
    return end if end <= len(buf) else -1


class ConstProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, chunk: bytes) -> None:
        self.buf += chunk
        pos, answers = 0, 0
        while True:
            end = request_end(self.buf, pos)
            if end < 0:
                break
            pos, answers = end, answers + 1
        if answers:
            del self.buf[:pos]
            assert self.transport is not None
            self.transport.write(RESPONSE * answers)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ConstProtocol, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
