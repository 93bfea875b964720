"""HTTP-level middleware that wraps the whole app: a body size limit, security headers,
and request metrics.

All are plain ASGI middleware, so they act before FastAPI reads or parses anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from fastapi.routing import iter_route_contexts
from starlette.datastructures import MutableHeaders
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1024 * 1024

# The pages load their scripts and styles from /static only: no inline script, no eval.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
# FastAPI's own /docs and /redoc pages load Swagger UI and ReDoc from a CDN with an inline
# script; they get the other headers but not this policy, which they cannot satisfy.
CSP_EXEMPT_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class BodySizeLimit:
    """Refuse a request body over the limit with 413, before reading it when it says its size."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer 413 now; to the app, the client has simply gone away.
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is out; whatever the app answers to the "disconnect" is not
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """nosniff and friends on every response; the content security policy on HTML ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                html = headers.get("content-type", "").startswith("text/html")
                if html and scope["path"] not in CSP_EXEMPT_PATHS:
                    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)


UNMATCHED_ROUTE = "unmatched"
RecordRequest = Callable[[str, str, int, float], None]  # method, route, status, seconds


class RequestMetrics:
    """Count and time every request by method, route template and status.

    The route is the template the router matched (`/order/{order_id}`), never the raw
    path, so that a label value stands for a handful of series, not one per order; paths
    no route matches share one value. Outermost, so it also sees the 413s and 500s that
    the other middleware and the error handlers answer.
    """

    def __init__(self, app: ASGIApp, record: RecordRequest) -> None:
        self.app = app
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The router rewrites the scope as it descends into a mount; keep the request's.
        request_scope = dict(scope)
        status = 500  # if the app raises before answering, the server answers 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = route_template(scope, request_scope)
            self.record(scope["method"], route, status, time.perf_counter() - started)


def route_template(served: Scope, request: Scope) -> str:
    """The template of the route that served (or refused) this request.

    `served` is the scope after the app ran, `request` a copy of it from before.
    """
    # The router leaves the route it matched in the scope, which the middleware shares.
    path = getattr(served.get("route"), "path", None)
    if isinstance(path, str):
        return path
    # Mounts (/static), Starlette's own routes (/docs) and requests refused before the
    # router (413) leave none: match the request against the top-level routes here.
    app = request.get("app")
    for route in iter_route_contexts(getattr(getattr(app, "router", None), "routes", [])):
        if route.matches(dict(request))[0] is Match.NONE:
            continue
        if isinstance(route.original_route, Mount):
            return f"{route.path}/{{path}}"
        if isinstance(route.path, str):
            return route.path
    return UNMATCHED_ROUTE
