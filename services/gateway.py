"""The suite behind one address: ``bentoml serve services.gateway:Gateway``.

BentoML composition: every task service is a dependency (``bentoml.depends``) and runs in its own worker processes
with its own resources, reached over a unix socket; the gateway forwards each request under ``/v1/<task>/`` to its
task unchanged (body streamed, status and headers as the task answered) and serves the web page at ``/``. One
OpenAPI page (``/docs``, from ``/docs.json``, every task's routes with their parameters and bodies), one
``/metrics`` (the task processes share BentoML's multiprocess metrics), one ``/readyz`` (200 only when every task
answers its own ``/readyz`` with 200). The same task services also run as separate deployments, unchanged.

``--arg tasks=tumor,palette`` serves a subset; ``--arg task_urls=malaria=http://malaria:3000,...`` reaches tasks
that run elsewhere (separate deployments) instead of starting them.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from pathlib import Path
from urllib.parse import quote, urlparse

import aiohttp
import bentoml
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import Field
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from services import bentoml_private, load
from services.connections import ConnectionArgs
from services.pipeline import add_middlewares, app_paths
from services.security import load_auth_config
from tasks import TASKS
from tasks.kinds import kind_of
from tasks.spec import resolve

STATIC = Path(__file__).resolve().parent / "static"
SERVICES = {task: load(task) for task in TASKS}  # every registered task's service


class GatewayArgs(ConnectionArgs):
    """``bentoml serve services.gateway:Gateway --arg tasks=... --arg task_urls=...`` (every process sees the same
    arguments)."""

    tasks: str = Field(",".join(SERVICES), description="comma-separated tasks to serve")
    task_urls: str = Field(
        "",
        description="task=URL pairs, comma-separated (malaria=http://malaria:3000,...): those tasks are reached "
        "there (separate deployments, as on Kubernetes) instead of being started as processes of this server",
    )


ARGS = bentoml.use_arguments(GatewayArgs)
SELECTED = [t.strip() for t in ARGS.tasks.split(",") if t.strip()]
PAIRS = [pair.strip() for pair in ARGS.task_urls.split(",") if pair.strip()]
if malformed := [pair for pair in PAIRS if "=" not in pair]:
    raise ValueError(f"task_urls: expected task=URL pairs, got {', '.join(malformed)}")
URLS = dict(pair.split("=", 1) for pair in PAIRS)
if unknown := sorted((set(SELECTED) | set(URLS)) - set(SERVICES)):
    raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")

# Hop-by-hop headers belong to one connection, not to the request; the task's date / server would be doubled.
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
}
NOT_FORWARDED = HOP_BY_HOP | {b"expect"}  # the gateway answers a client's Expect itself and sets its own
DROP_FROM_RESPONSE = HOP_BY_HOP | {b"date", b"server"}
SEND_AT_ONCE = 1024 * 1024  # bodies up to this size go with their headers: no round trip for a go-ahead
CLIENTS: dict[str, aiohttp.ClientSession] = {}


def task_app(svc) -> tuple[FastAPI, str]:
    """The task's API app and the path BentoML mounts it at."""
    return next(
        (app, path.rstrip("/")) for app, path, _ in bentoml_private.mounted_apps(svc) if isinstance(app, FastAPI)
    )


def client_for(dep, svc) -> aiohttp.ClientSession:
    """An HTTP client for the address BentoML gave the task (``file://`` unix socket or ``tcp://``). aiohttp, as
    BentoML's own client: measured about a millisecond cheaper per request than httpx here."""
    url = bentoml_private.dependency_url(dep)  # fails under --development: each task runs in its own processes
    timeout = aiohttp.ClientTimeout(total=(svc.config.get("traffic", {}).get("timeout") or 60) * 1.01, connect=5)
    if urlparse(url).scheme == "file":
        connector = aiohttp.UnixConnector(path=bentoml_private.uri_to_path(url), limit=256)
        base = "http://task"
    else:
        connector, base = aiohttp.TCPConnector(limit=256), url.replace("tcp://", "http://")
    # the bytes as the task sent them: no decompression, no redirects followed, no headers of its own
    return aiohttp.ClientSession(
        base_url=base, connector=connector, timeout=timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
    )


class Forward:
    """ASGI app: the request as received goes to the task; its response comes back unchanged. Responses are read
    whole (every task answers JSON), which is cheaper than relaying a stream."""

    def __init__(self, task: str) -> None:
        self.task = task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = quote(scope["path"])  # the route Dispatch checked, encoded again
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in NOT_FORWARDED]
        sizes = [v for k, v in scope["headers"] if k == b"content-length"]
        has_body = bool(sizes) or any(k == b"transfer-encoding" for k, _ in scope["headers"])
        # A large or unsized body is sent once the task says "100 Continue": a task that refuses it at once (413
        # for a declared size past its limit) is heard before the client has to send, or the gateway to read, it.
        expect = has_body and not (sizes and sizes[0].isdigit() and int(sizes[0]) <= SEND_AT_ONCE)

        async def body():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ConnectionResetError("the client went away")
                if chunk := message.get("body", b""):
                    yield chunk
                if not message.get("more_body", False):
                    return

        try:
            async with CLIENTS[self.task].request(
                scope["method"],
                path,
                headers=headers,
                data=body() if has_body else None,
                expect100=expect,
                allow_redirects=False,
            ) as response:
                content = await response.read()
                raw = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in DROP_FROM_RESPONSE]
                status = response.status
        except asyncio.TimeoutError:
            return await _error(send, 504, f"the {self.task} service did not answer in time")
        except aiohttp.ClientError:
            return await _error(send, 503, f"the {self.task} service is not available")
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = FastAPI(title="inference suite", docs_url=None, redoc_url=None)


@app.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


def listed(task: str) -> dict:
    """What the web page needs of a task: its name and kind, and the panel its kind derives from its registry
    entry (image classifiers: title, heading, labels)."""
    spec = TASKS[task]
    kind = kind_of(spec)
    return {"name": task, "kind": kind.name, **(resolve(kind.panel)(spec) if kind.panel else {})}


LISTED = {"tasks": [listed(task) for task in SELECTED]}


@app.get("/tasks.json", include_in_schema=False)
async def listed_tasks() -> dict:
    """The served tasks, for the web page."""
    return LISTED


@app.get("/docs", include_in_schema=False)
async def docs() -> FileResponse:
    """BentoML's own OpenAPI page (its assets ship with BentoML: no CDN), reading ``/docs.json``."""
    return FileResponse(bentoml_private.openapi_page())


class Dispatch:
    """ASGI app mounted at ``/v1``: ``/v1/<task>/<route>`` goes straight to that task's :class:`Forward`, without
    matching FastAPI's routes (BentoML tries every route of a mounted Starlette app before choosing it; a plain
    ASGI app is chosen by its prefix alone). Only the routes a task documents are forwarded, by the path as
    decoded, and only if it has no ``.`` / ``..`` segments: nothing else of the task (its own ``/metrics``,
    ``/docs.json``) is reachable through the gateway. Anything else is a 404 here; WebSocket upgrades are refused
    (403)."""

    def __init__(self, tasks: list[str]) -> None:
        self.forwards = {task: Forward(task) for task in tasks}
        self.routes: dict[str, Forward] = {}  # full path of every documented task route -> its task's Forward

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # before accepting: the client gets 403
            return
        path = scope["path"]  # percent-decoded by the server
        forward = self.routes.get(path) if posixpath.normpath(path) == path else None
        if forward is None:
            return await _error(send, 404, f"no such route: {path[:200]}")
        await forward(scope, receive, send)


DISPATCH = Dispatch(SELECTED)


app.mount("/static", StaticFiles(directory=STATIC), name="static")
for task in SELECTED:
    api, prefix = task_app(SERVICES[task])
    for route in api.routes:  # the task's routes under their full path: /docs.json documents every task
        if isinstance(route, APIRoute):
            clone = APIRoute(
                prefix + route.path,
                route.endpoint,
                methods=route.methods,
                name=f"{task}_{route.name}",
                response_model=route.response_model,
                tags=[task],
                summary=route.summary,
                description=route.description,
                responses=route.responses,
                operation_id=f"{task}_{route.name}",
                openapi_extra=route.openapi_extra,
            )
            clone.app = DISPATCH.routes[clone.path] = DISPATCH.forwards[task]  # requests reach DISPATCH first
            app.router.routes.append(clone)


class GatewayBase:
    """Forwards to the task services; ready when every one of them is."""

    def __init__(self) -> None:
        for task in SELECTED:
            CLIENTS[task] = client_for(getattr(self, task), SERVICES[task])

    async def __is_ready__(self) -> bool:
        auth = load_auth_config()  # tasks may want a key on /readyz too (SUITE_AUTH_HEALTH=key)
        headers = {"X-API-Key": auth.keys[0].decode()} if auth.enabled else {}

        async def ready(task: str) -> bool:
            path = SERVICES[task].config.get("endpoints", {}).get("readyz", "/readyz")
            try:
                async with CLIENTS[task].get(path, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    return r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False

        return all(await asyncio.gather(*(ready(t) for t in SELECTED)))

    @bentoml.on_shutdown
    async def close_clients(self) -> None:
        await asyncio.gather(*(c.close() for c in CLIENTS.values()))


Gateway = bentoml.service(
    name="gateway",
    traffic={"timeout": 3700},  # past any task's own timeout (at most 3600 s): the task's 504 comes first
    # the task logs and traces each request itself; doing it again here costs every request a fraction of a ms
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/v1/"]},
    metrics={"enabled": False},  # BentoML's label requests by raw path: ours (add_middlewares), by route
    workers=1,
    endpoints={"livez": "/livez", "readyz": "/readyz"},
)(
    bentoml.asgi_app(app, path="/")(  # the page, the docs, and the routes as /docs.json describes them
        bentoml.asgi_app(DISPATCH, path="/v1")(
            type(
                "Gateway",
                (GatewayBase,),
                {task: bentoml.depends(SERVICES[task], url=URLS.get(task)) for task in SELECTED},
            )
        )
    )
)
add_middlewares(Gateway, "gateway", [*DISPATCH.routes, *app_paths(app, "")], prefixes=("/static/",))
ARGS.install()
