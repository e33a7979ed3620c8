"""The raw ASGI shape shared by the floors: lifespan hooks, POST /graphql answered by
one coroutine returning the JSON bytes, GET /readyz, 404 for anything else."""

import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

try:  # a floor serializes with the fastest encoder at hand
    import orjson  # type: ignore[import-not-found, unused-ignore]

    def dumps(value: object) -> bytes:
        encoded: bytes = orjson.dumps(value)
        return encoded

    ENCODER = "orjson"
except ImportError:  # same bytes as Strawberry's json.dumps(..., separators=(",", ":"))

    def dumps(value: object) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    ENCODER = "json"

_JSON = [(b"content-type", b"application/json")]
_READY = b'{"status":"ok"}'


def raw_app(
    answer: Callable[[], Awaitable[bytes]],
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, startup, shutdown)
            return
        if scope["type"] != "http":
            return
        more = True
        while more:  # drain the request body
            message = await receive()
            more = message.get("more_body", False)
        if scope["path"] == "/graphql" and scope["method"] == "POST":
            await _respond(send, 200, await answer())
        elif scope["path"] == "/readyz":
            await _respond(send, 200, _READY)
        else:
            await _respond(send, 404, b'{"error":"not found"}')

    return app


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(
    receive: Receive,
    send: Send,
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as error:
                await send({"type": "lifespan.startup.failed", "message": repr(error)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
