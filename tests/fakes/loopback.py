"""LoopbackServer: an aiohttp app on 127.0.0.1 at a free port, started and closed as `async with`."""

from __future__ import annotations

from typing import Self

from aiohttp import web
from aiohttp.test_utils import TestServer


class LoopbackServer:
    def __init__(self, app: web.Application) -> None:
        self._server = TestServer(app, host="127.0.0.1")

    async def start(self) -> None:
        await self._server.start_server(shutdown_timeout=1.0)

    async def close(self) -> None:
        await self._server.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        assert self._server.port is not None, f"{type(self).__name__} is not started"
        return self._server.port
