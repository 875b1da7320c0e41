"""The suite behind one address: ``bentoml serve services.gateway:Gateway``.

BentoML composition: every task service is a dependency (``bentoml.depends``) and runs in its own worker processes
with its own resources, reached over a unix socket; the gateway forwards each request under ``/v1/<task>/`` to its
task unchanged (body streamed, status and headers as the task answered) and serves the web page at ``/``. One
OpenAPI page (``/docs``, from ``/docs.json``, every task's routes with their parameters and bodies), one
``/metrics`` (the task processes share BentoML's multiprocess metrics), one ``/readyz`` (200 only when every task
answers its own ``/readyz`` with 200). The same task services also run as separate deployments, unchanged.

``--arg tasks=tumor,palette`` serves a subset.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlparse

import bentoml
import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, StreamingResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from services.asr import Asr
from services.asr import app as asr_app
from services.keyphrase import Keyphrase
from services.keyphrase import app as keyphrase_app
from services.malaria import Malaria
from services.malaria import app as malaria_app
from services.palette import Palette
from services.palette import app as palette_app
from services.tumor import Tumor
from services.tumor import app as tumor_app

STATIC = Path(__file__).resolve().parent / "static"
SERVICES = {
    "malaria": (Malaria, malaria_app),
    "tumor": (Tumor, tumor_app),
    "asr": (Asr, asr_app),
    "keyphrase": (Keyphrase, keyphrase_app),
    "palette": (Palette, palette_app),
}


class GatewayArgs(BaseModel):
    """``bentoml serve services.gateway:Gateway --arg tasks=...`` (every process sees the same arguments)."""

    tasks: str = Field(",".join(SERVICES), description="comma-separated tasks to serve")


ARGS = bentoml.use_arguments(GatewayArgs)
SELECTED = [t.strip() for t in ARGS.tasks.split(",") if t.strip()]
if unknown := sorted(set(SELECTED) - set(SERVICES)):
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
DROP_FROM_RESPONSE = HOP_BY_HOP | {b"date", b"server"}
CLIENTS: dict[str, httpx.AsyncClient] = {}


def mount_prefix(svc, app: FastAPI) -> str:
    return next(path.rstrip("/") for mounted, path, _ in svc.mount_apps if mounted is app)


def client_for(dep, svc) -> httpx.AsyncClient:
    """An HTTP client for the address BentoML gave the task (``file://`` unix socket or ``tcp://``); under
    ``bentoml serve --development`` the task runs in this process and is called in process."""
    from _bentoml_impl.client import RemoteProxy  # what bentoml.depends gives when the task has its own processes

    timeout = httpx.Timeout((svc.config.get("traffic", {}).get("timeout") or 60) * 1.01, connect=5)
    if not isinstance(dep, RemoteProxy):
        from starlette.routing import Router

        app = Router(routes=[Mount(path, app=a) for a, path, _ in svc.mount_apps])
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://task", timeout=timeout)
    url = dep.to_async.url
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    if urlparse(url).scheme == "file":
        from bentoml._internal.utils.uri import uri_to_path

        transport = httpx.AsyncHTTPTransport(uds=uri_to_path(url), limits=limits)
        return httpx.AsyncClient(transport=transport, base_url="http://task", timeout=timeout)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    return httpx.AsyncClient(transport=transport, base_url=url.replace("tcp://", "http://"), timeout=timeout)


class Forward:
    """ASGI app: the request as received goes to the task; its response streams back unchanged."""

    def __init__(self, task: str) -> None:
        self.task = task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = CLIENTS[self.task]
        path = scope.get("raw_path") or scope["path"].encode()  # percent-encoding as sent
        if scope.get("query_string"):
            path += b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])

        async def body():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise httpx.ReadError("the client went away")
                if chunk := message.get("body", b""):
                    yield chunk
                if not message.get("more_body", False):
                    return

        request = client.build_request(
            scope["method"], path.decode("latin-1"), headers=headers, content=body() if has_body else None
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            return await _error(send, 504, f"the {self.task} service did not answer in time")
        except httpx.TransportError:
            return await _error(send, 503, f"the {self.task} service is not available")
        try:
            out = StreamingResponse(response.aiter_raw(), status_code=response.status_code)
            out.raw_headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROP_FROM_RESPONSE]
            await out(scope, receive, send)  # a client that goes away cancels the stream, and the task's response
        finally:
            await response.aclose()


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = FastAPI(title="inference suite", docs_url=None, redoc_url=None)


@app.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@app.get("/docs", include_in_schema=False)
async def docs() -> FileResponse:
    """BentoML's own OpenAPI page (its assets ship with BentoML: no CDN), reading ``/docs.json``."""
    import _bentoml_impl.server

    return FileResponse(Path(_bentoml_impl.server.__file__).parent / "main-openapi.html")


app.mount("/static", StaticFiles(directory=STATIC), name="static")
for task in SELECTED:
    svc, task_app = SERVICES[task]
    prefix = mount_prefix(svc, task_app)
    forward = Forward(task)
    for route in task_app.routes:  # the task's routes under their full path: /docs.json documents every task
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
            clone.app = forward  # answered by the task service, not here
            app.router.routes.append(clone)
    app.router.routes.append(Mount(prefix, app=forward))  # the rest under the prefix: the task's own 404 / 405


class GatewayBase:
    """Forwards to the task services; ready when every one of them is."""

    def __init__(self) -> None:
        for task in SELECTED:
            CLIENTS[task] = client_for(getattr(self, task), SERVICES[task][0])

    async def __is_ready__(self) -> bool:
        async def ready(task: str) -> bool:
            svc, dep = SERVICES[task][0], getattr(self, task)
            if hasattr(dep, "__is_ready__"):  # --development: the task is an instance in this process
                return bool(await dep.__is_ready__())
            try:
                r = await CLIENTS[task].get(svc.config.get("endpoints", {}).get("readyz", "/readyz"), timeout=5)
            except httpx.HTTPError:
                return False
            return r.status_code == 200

        return all(await asyncio.gather(*(ready(t) for t in SELECTED)))

    @bentoml.on_shutdown
    async def close_clients(self) -> None:
        await asyncio.gather(*(c.aclose() for c in CLIENTS.values()))


Gateway = bentoml.service(
    name="gateway",
    traffic={"timeout": 300},  # at least every task's own timeout: the task answers first
    workers=1,
    endpoints={"livez": "/livez", "readyz": "/readyz"},
)(
    bentoml.asgi_app(app, path="/")(
        type("Gateway", (GatewayBase,), {task: bentoml.depends(SERVICES[task][0]) for task in SELECTED})
    )
)
