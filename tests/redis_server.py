"""A real Redis server for the tests: Debian's redis-server on 127.0.0.1, a free port, no persistence."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis

from bot.state import RedisState

S = TypeVar("S", bound=RedisState)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """`redis-server --save "" --appendonly no` in a folder of its own; stop() and start() again keep
    its port, so a test can take Redis away and bring it back."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:  # .ci/run installs it; a developer without it is told how
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.folder), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    async def flush(self) -> None:
        """Empty its database, so that the next test starts clean."""
        raw = aioredis.Redis.from_url(self.url)
        try:
            await raw.flushdb()
        finally:
            await raw.aclose()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@asynccontextmanager
async def in_use(state: S, server: RedisServer) -> AsyncIterator[S]:
    """`state` connected to `server`; afterwards closed, and the server emptied for the next test."""
    await state.ping()
    try:
        yield state
    finally:
        await server.flush()
        await state.close()


class Cuttable:
    """A loopback TCP hop in front of a Redis server that the test can cut and restore, as a network
    loses a Redis that keeps running (and keeps its keys): while cut, every connection is closed at once."""

    def __init__(self, server: RedisServer) -> None:
        self._target = server.port
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.is_cut = False
        self.stalling = False  # new connections are taken but nothing goes through them, ever
        self.stalled = asyncio.Event()  # set once one has been
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> Cuttable:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._open):
            writer.transport.abort()

    def restore(self) -> None:
        self.is_cut = False

    async def _forward(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        if self.is_cut:
            client_out.transport.abort()
            return
        if self.stalling:  # a network that drops what it is sent: the client's wait runs out
            self._open.add(client_out)
            self.stalled.set()
            try:
                while await client_in.read(65536):
                    pass
            finally:
                self._open.discard(client_out)
                client_out.transport.abort()
            return
        redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self._target)
        self._open |= {client_out, redis_out}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        try:
            await asyncio.gather(pipe(client_in, redis_out), pipe(redis_in, client_out))
        finally:
            self._open -= {client_out, redis_out}
