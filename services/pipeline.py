"""The request pipeline every task service runs, written once.

    body (size limit) -> parse (payload + options, from the same declarations the OpenAPI page shows)
      -> admission (predicted answer within the latency budget, from the requests in the service and their departure
     rate, and from the model queue; else 503 + Retry-After at once)
      -> prepare (decode, validate, preprocess; a worker thread; a per-request decoded-size budget)
      -> batcher (one model call at a time per model) -> finish (postprocess, Grad-CAM, annotation, the JSON
      itself; a worker thread, unless the task declares it light) -> typed response with the model version

A task declares its :class:`Route` s (payload, options model, response model) and writes ``load_model``, ``run``
(the model call), ``prepare`` and ``finish``; nothing else. ``prepare`` never runs on the event loop, nor does
``finish`` unless ``finish_is_light`` says its cost does not grow with the input (one label and its
probabilities: a thread hand-off would cost more), so ``/livez`` answers while large requests are decoded.
Per-request state lives in the :class:`Prepared` object only: nothing a request writes is shared with another.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.batching import AdaptiveBatcher, Flow, Overloaded
from services.connections import ConnectionArgs
from services.http import (
    ERROR_RESPONSES,
    Upload,
    check_text,
    error_response,
    loads_json,
    off_loop,
    parse_uploads,
    read_body,
)
from services.lifecycle import ModelService, log
from services.metrics import observer, overloaded, queue_observer, rejected
from services.versions import NO_MODEL, Incomplete, Versions
from tasks.images import Budget, InputError

MODEL_FAILED = "the server failed on this request (its log says why); the request itself was well-formed"

# --- declarations -------------------------------------------------------------------------------------------


class Options(BaseModel):
    """Base of a route's options: query parameters, or fields beside the payload in a JSON / multipart body (the
    body wins). An unknown option is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(Options):
    pass


@dataclass(frozen=True)
class Files:
    """The payload is one file (or, with ``many``, several) in field ``field`` of a multipart form, as base64 in
    a JSON object, or (single file only) the raw body with one of ``raw_types`` (a trailing ``/`` takes any
    subtype)."""

    field: str
    many: bool = False
    raw_types: tuple[str, ...] = ("image/png", "image/jpeg")
    description: str = "image file (PNG, JPEG, TIFF, BMP)"


@dataclass(frozen=True)
class Text:
    """The payload is UTF-8 text: a ``text/plain`` body, or field ``field`` of a JSON object."""

    field: str = "text"


@dataclass(frozen=True)
class Json:
    """The payload is a JSON object that ``model`` (pydantic) validates, the parser and the OpenAPI page from the
    same declaration; fields of the route's options beside it are options."""

    model: type[BaseModel]


@dataclass(frozen=True)
class Route:
    """One POST route of a task: what it takes (payload and options) and what it answers."""

    path: str
    summary: str
    payload: Files | Text | Json
    options: type[Options]
    response: type[BaseModel]

    @property
    def name(self) -> str:
        return self.path.strip("/").replace("/", "_")


class CommonArgs(ConnectionArgs):
    """Service arguments every task has (``bentoml serve services.<module>:<Task> --arg NAME=VALUE``)."""

    model_tag: str = Field(
        "", description="store entry to serve and stay on (default: <task>:latest, and each newer entry as it lands)"
    )
    poll_s: float = Field(
        2.0, ge=0, le=3600, description="seconds between looks at the store for a newer entry (0: never)"
    )
    build_status: str = Field(
        "",
        description="status file of the background demo build (`python -m services` sets it): shown while "
        "no model serves",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="model threads (0: the container's CPU quota)")
    batching: bool = Field(True, description="adaptive batching across concurrent requests")
    max_batch_size: int = Field(32, ge=1, le=1024, description="items per model call")
    max_delay_ms: float = Field(0.0, ge=0, le=1000, description="extra wait for a fuller batch")
    max_body_mb: float = Field(10.0, gt=0, le=4096, description="largest request body, MiB (413 past it)")
    timeout_s: float = Field(
        60.0, gt=0, le=3600, description="a request without its answer started by then gets 504 (slow uploads too)"
    )
    latency_budget_s: float = Field(
        10.0, gt=0, le=3600, description="longest predicted wait for the model a request is admitted with (503 past)"
    )
    max_queue: int = Field(1024, ge=1, description="most items admitted and not yet in a model call (503 past)")
    noop_route: bool = Field(False, description="serve POST /noop: this pipeline without decoding or model")
    max_request_pixels: int = Field(
        64_000_000, ge=1, description="decoded pixels (or audio samples) one request may hold in all (413 past)"
    )
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans for the task's routes (configure BentoML's tracing exporter too); off "
        "by default: with no exporter, BentoML still builds two spans a request, for nothing",
    )
    access_log: bool = Field(True, description="one access-log line a request (method, path, status, time)")


# --- the service base ---------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """What ``prepare`` made of one request: the model input (``x``, ``size`` items, ``cost`` for the call-time
    model) and whatever ``finish`` needs later (``state``). Private to its request."""

    x: Any
    size: int = 1
    cost: float | None = None
    state: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0  # perf_counter when the request arrived (set by the pipeline)


class TaskService(ModelService):
    """A task's service: the pipeline above around the task's ``prepare`` / ``run`` / ``finish``."""

    routes: ClassVar[tuple[Route, ...]] = ()
    args: ClassVar[CommonArgs]
    requires: ClassVar[tuple[str, ...]] = ("model.onnx",)  # store files the service cannot run without
    export_hint: ClassVar[str] = "onnx"
    batch_limit: ClassVar[int] = 0  # most items per model call whatever max_batch_size says (0: no such limit)

    answers_without_model: ClassVar[bool] = False  # some routes answer before any store entry exists

    def load(self) -> None:
        """Start serving: the first version now if the store has one (services/versions.py), then watch it."""
        from services.backends import cpu_quota

        self.set_body_limit(self.args.max_body_mb)
        self.threads = self.args.threads or cpu_quota()
        self.flow = Flow()
        self.versions = Versions(self, self.args.model_tag, self.args.poll_s, self.args.build_status)
        self.versions.start()

    def replica(self, entry) -> TaskService:
        """A copy of this service serving ``entry`` (None: the routes that need no model), loaded and warmed up."""
        replica = copy.copy(self)  # its own attributes from here on; shared objects (args, flow) stay shared
        if entry is None:
            replica.tag = NO_MODEL
        else:
            files = entry.info.metadata.get("files", {})
            if missing := [name for name in self.requires if not any(f.startswith(name) for f in files)]:
                raise Incomplete(
                    f"{entry.tag} has no {', '.join(missing)}: run `python -m exporters {self.task} --format "
                    f"{self.export_hint}`"
                )
            replica.tag = str(entry.tag)
        replica.load_model(entry)
        replica.start_pipeline()
        return replica

    def serve_self(self) -> None:
        """Serve this object's model as it is (already loaded; tests and tools that load by hand)."""
        self.flow = getattr(self, "flow", None) or Flow()
        self.versions = Versions(self, self.tag, 0, "")
        self.versions.install(self, self.tag, 0)

    def start_pipeline(self) -> None:
        """The worker threads and the batcher around the loaded model, warmed up."""
        args = self.args
        self.pool = ThreadPoolExecutor(max_workers=max(2, self.threads), thread_name_prefix=f"{self.task}-work")
        self.batcher = AdaptiveBatcher(
            self.run,
            min(args.max_batch_size, self.batch_limit or args.max_batch_size) if args.batching else 1,
            args.max_delay_ms if args.batching else 0.0,
            observer(self.task, self.tag),
            budget_s=args.latency_budget_s,
            max_queue=args.max_queue,
            on_queue=queue_observer(self.task),
            **self.batch_functions(),
        )
        try:
            self.warm_up()  # before reporting ready: the first request must not pay for lazy initialisation
        except BaseException:  # a version that fails its warm-up leaves no threads behind
            self.close_pipeline()
            raise

    def close_pipeline(self) -> None:
        """Release this version: its batcher and worker threads (its model goes with the last reference)."""
        self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def without_model_note(self) -> str:
        """What a service with ``answers_without_model`` does before its model lands (its management route says)."""
        return ""

    # What a task writes -------------------------------------------------------------------------------------

    backend_name: str = ""

    def load_model(self, entry) -> None:
        """Load the model files of ``entry`` (checked against their SHA-256); set ``backend_name``. ``entry`` is
        None only for a service with ``answers_without_model``: set up what needs no model."""
        raise NotImplementedError

    def batch_functions(self) -> dict[str, Any]:
        """``collate`` / ``split`` for the batcher when payloads are not (k, ...) arrays."""
        return {}

    def warm_up(self) -> None:
        raise NotImplementedError

    def run(self, batch: Any) -> Any:
        """The model call (on the batcher's thread, one at a time)."""
        raise NotImplementedError

    def prepare(self, route: Route, inputs: list[Upload] | str, options: Options, budget: Budget) -> Prepared:
        raise NotImplementedError

    def finish(self, route: Route, prepared: Prepared, out: Any, options: Options) -> dict[str, Any]:
        """The response's task fields (the base adds ``model``, ``backend`` and ``elapsed_ms``)."""
        raise NotImplementedError

    def finish_is_light(self, route: Route, prepared: Prepared, options: Options) -> bool:
        """Whether ``finish`` costs the same small amount whatever the input (a few labels, no image work), so that
        it runs on the event loop rather than paying a thread hand-off. Default: only for the no-op route."""
        return route is NOOP

    # The pipeline -------------------------------------------------------------------------------------------

    async def handle(self, route: Route, request: Request) -> Response:
        start = time.perf_counter()
        version = self.versions.acquire()
        if version is None:
            message, retry = self.versions.not_ready()
            return JSONResponse({"error": message}, status_code=503, headers={"Retry-After": str(retry)})
        try:
            self.flow.enter(self.args.latency_budget_s)
        except Overloaded as e:
            self.versions.release(version)
            return self._overloaded(e)
        try:
            return await version.replica._handle(route, request, start)
        finally:
            self.flow.leave()
            self.versions.release(version)

    async def _handle(self, route: Route, request: Request, start: float) -> Response:
        try:
            reservation = self.batcher.admit()
        except Overloaded as e:
            return self._overloaded(e)
        loop = asyncio.get_running_loop()
        try:
            inputs, fields = await self.parse(route, request)
            options = parse_options(route.options, request.query_params, fields)
            budget = Budget(self.args.max_request_pixels)
            prepare = _noop_prepare if route is NOOP else self.prepare
            prepared = await loop.run_in_executor(self.pool, prepare, route, inputs, options, budget)
            del inputs  # the uploads' bytes are not needed past decoding
            prepared.started = start
            if prepared.size > 1:  # a batch request: admitted again at its real size
                self.batcher.release(reservation)
                reservation = None  # nothing to give back should admit refuse
                reservation = self.batcher.admit(prepared.size, prepared.cost)
            out = None  # a request answered without the model (a palette by k-medians) skips the batcher
            if prepared.x is not None:
                out = await self.batcher(prepared.x, prepared.size, prepared.cost, reserved=reservation)
                reservation = None
            if self.finish_is_light(route, prepared, options):
                body = self._finish(route, prepared, out, options, start)
            else:
                body = await loop.run_in_executor(self.pool, self._finish, route, prepared, out, options, start)
        except InputError as e:
            rejected(self.task, e.status)
            return error_response(e)
        except Overloaded as e:
            return self._overloaded(e)
        except Exception:  # the model or the task's code failed: a 500 that says so; the log says why
            log.exception("%s: request failed", self.task)
            return JSONResponse({"error": MODEL_FAILED}, status_code=500)
        finally:
            self.batcher.release(reservation)
        return Response(body, media_type="application/json")

    def _finish(self, route: Route, prepared: Prepared, out: Any, options: Options, start: float) -> bytes:
        fields = {} if route is NOOP else self.finish(route, prepared, out, options)
        elapsed = round((time.perf_counter() - start) * 1000, 3)
        return route.response(**fields, model=self.tag, backend=self.backend_name, elapsed_ms=elapsed).model_dump_json()

    def _overloaded(self, e: Overloaded) -> Response:
        overloaded(self.task)
        return JSONResponse({"error": str(e)}, status_code=503, headers={"Retry-After": str(e.retry_after)})

    async def parse(self, route: Route, request: Request) -> tuple[list[Upload] | str, dict[str, Any]]:
        """The payload and the option fields of the body."""
        payload = route.payload
        if isinstance(payload, Text):
            return await parse_text(request, payload.field, self.max_text_bytes())
        if isinstance(payload, Json):
            return await parse_json(request, payload.model, route.options, self.max_text_bytes())
        max_files = self.max_files() if payload.many else 1
        return await parse_uploads(request, self.body_limit, payload.field, payload.many, max_files, payload.raw_types)

    def max_files(self) -> int:
        return 1

    def max_text_bytes(self) -> int:
        return self.body_limit

    def shutdown(self) -> None:
        if getattr(self, "versions", None) is not None:
            self.versions.stop()


async def parse_text(request: Request, field_name: str, limit: int) -> tuple[str, dict[str, Any]]:
    """The text of a ``text/plain`` body, or of field ``field_name`` of a JSON object (other fields: options)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("text/plain", "application/json"):
        raise InputError(f"unsupported content type {ctype or '(none)'!r}: send text/plain or application/json", 415)
    body = await read_body(request, limit)
    return await off_loop(len(body), _text_of, body, ctype == "application/json", field_name)


def _text_of(body: bytes, is_json: bool, field_name: str) -> tuple[str, dict[str, Any]]:
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"the body is not valid UTF-8 (byte {e.start})", 400) from e
    if not is_json:
        return decoded, {}
    doc = loads_json(decoded)
    if not isinstance(doc, dict) or not isinstance(doc.get(field_name), str):
        raise InputError(f"JSON body must be an object with a string {field_name!r} field", 400)
    return check_text(doc.pop(field_name), field_name), doc


async def parse_json(request: Request, model: type[BaseModel], options: type[Options], limit: int):
    """A JSON object body validated by ``model``, and the fields beside it that are ``options``'."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise InputError(f"unsupported content type {ctype or '(none)'!r}: send application/json", 415)
    body = await read_body(request, limit)
    return await off_loop(len(body), _json_of, body, model, options)


def _check_strings(value: object, where: str) -> None:
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, f"{where}[{i}]")


def _json_of(body: bytes, model: type[BaseModel], options: type[Options]) -> tuple[BaseModel, dict[str, Any]]:
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"the body is not valid UTF-8 (byte {e.start})", 400) from e
    doc = loads_json(decoded)
    if not isinstance(doc, dict):
        raise InputError("JSON body must be an object", 400)
    _check_strings(doc, "")
    fields = {k: doc.pop(k) for k in list(doc) if k in options.model_fields}
    try:
        return model.model_validate(doc), fields
    except ValidationError as e:
        raise InputError(validation_message(e, [*model.model_fields, *options.model_fields]), 422) from None


def validation_message(e: ValidationError, known: list[str]) -> str:
    """One line per error: where, and what was wrong (an unknown field names the known ones)."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        msg = f"unknown field (known: {', '.join(known) or 'none'})" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def parse_options(model: type[Options], query, fields: dict[str, Any]) -> Options:
    """The route's options from the query string and the body's other fields (the body wins), validated by the
    same model the OpenAPI page documents; 422 naming each bad or unknown option."""
    values: dict[str, Any] = {}
    for key in query:
        if len(query.getlist(key)) > 1:
            raise InputError(f"option {key!r} given more than once", 422)
        values[key] = query[key]
    values.update(fields)
    try:
        return model.model_validate(values)
    except ValidationError as e:
        known = ", ".join(model.model_fields) or "none"
        parts = []
        for err in e.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "options"
            msg = f"unknown option (this route takes: {known})" if err["type"] == "extra_forbidden" else err["msg"]
            parts.append(f"{where}: {msg}")
        raise InputError("; ".join(parts), 422) from None


class NoopResponse(BaseModel):
    model: str
    backend: str
    elapsed_ms: float


NOOP = Route("/noop", "The request pipeline alone: no decoding, no model (benchmarks)", Text(), NoOptions, NoopResponse)


def _noop_prepare(_route: Route, _inputs: object, _options: Options, _budget: Budget) -> Prepared:
    return Prepared(None, size=0)


# --- the app and the BentoML service ------------------------------------------------------------------------


def openapi_for(route: Route) -> dict[str, Any]:
    """The route's query parameters and request bodies, from its payload and options declarations."""
    schema = route.options.model_json_schema()
    props: dict[str, Any] = schema.get("properties", {})
    parameters = [
        {"name": name, "in": "query", "required": False, "schema": prop, "description": prop.get("description", "")}
        for name, prop in props.items()
    ]
    payload = route.payload
    binary = {"type": "string", "format": "binary"}
    if isinstance(payload, Json):
        body = _inlined(payload.model.model_json_schema())
        body["properties"] = {**body.get("properties", {}), **props}
        content = {"application/json": {"schema": body}}
    elif isinstance(payload, Text):
        text = {"type": "string", "description": "UTF-8 text"}
        content = {
            "text/plain": {"schema": text},
            "application/json": {
                "schema": {"type": "object", "required": [payload.field], "properties": {payload.field: text, **props}}
            },
        }
    else:
        b64 = {"type": "string", "description": f"base64 {payload.description}"}
        many = payload.many
        content = {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [payload.field],
                    "properties": {payload.field: {"type": "array", "items": binary} if many else binary, **props},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": [payload.field],
                    "properties": {payload.field: {"type": "array", "items": b64} if many else b64, **props},
                }
            },
        }
        if not many:
            for ctype in payload.raw_types:
                content[ctype + "*" if ctype.endswith("/") else ctype] = {"schema": binary}
    return {"parameters": parameters, "requestBody": {"required": True, "content": content}}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` references replaced by the definitions (an OpenAPI operation
    cannot carry ``$defs`` of its own)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


OVERLOAD_RESPONSE = {503: {"model": ERROR_RESPONSES[400]["model"], "description": "At capacity or not ready yet"}}


def make_app(title: str, description: str, routes: tuple[Route, ...], current: Callable[[], Any] | None = None):
    """The task's FastAPI app: each route hands the request to the pipeline of ``current()``, the running service
    (default: BentoML's current service; tests pass their own)."""
    from fastapi import FastAPI

    from services.http import install_error_handlers

    if current is None:
        import bentoml

        current = bentoml.get_current_service
    app = FastAPI(title=title, description=description)
    install_error_handlers(app)
    add_management_routes(app, current)
    for route in routes:
        app.add_api_route(
            route.path,
            _documented,
            methods=["POST"],
            name=route.name,
            summary=route.summary,
            response_model=route.response,
            responses={**ERROR_RESPONSES, **OVERLOAD_RESPONSE},
            openapi_extra=openapi_for(route),
        )
        # FastAPI documents the route; the request skips its handler (dependencies, response validation: nothing
        # for a route that takes the raw request) and goes straight to the pipeline
        app.router.routes[-1].app = _asgi_endpoint(route, current)
    return app


async def _documented(request: Request) -> Response:
    """What FastAPI documents for every route: the raw request, nothing parsed. Never called: the route's ASGI app
    is replaced by :func:`_asgi_endpoint`."""
    raise NotImplementedError


def _asgi_endpoint(route: Route, current: Callable[[], Any]):
    """The ASGI app the router calls for ``route``: the raw request to the pipeline of ``current()``."""

    async def app(scope, receive, send) -> None:
        service = current()
        if getattr(service, "versions", None) is None:  # not started (its log says why)
            response = JSONResponse({"error": NOT_STARTED}, status_code=503, headers={"Retry-After": "30"})
        else:
            response = await service.handle(route, Request(scope, receive, send))
        await response(scope, receive, send)

    return app


NOT_STARTED = "the service has not started (its log says why)"
MANAGEMENT_BODY = 4096  # a tag and nothing else


def add_management_routes(app, current: Callable[[], Any]) -> None:
    """``GET /models``: the versions of the task's model and which one serves; ``POST /models`` ``{"tag": ...}``:
    load and pin a version, or follow the newest again (services/versions.py). Behind the API key when keys are
    set, like every route."""
    from services.versions import Busy, Incomplete, ModelsStatus, NotInStore, PinRequest

    def versions_of():
        versions = getattr(current(), "versions", None)
        if versions is None:
            raise InputError(NOT_STARTED, 503)
        return versions

    async def models(request: Request) -> Response:
        try:
            versions = versions_of()
        except InputError as e:
            return error_response(e)
        status = await asyncio.to_thread(versions.status)
        return Response(status.model_dump_json(), media_type="application/json")

    async def pin(request: Request) -> Response:
        try:
            versions = versions_of()
            body = await read_body(request, MANAGEMENT_BODY)
            try:
                tag = PinRequest.model_validate(loads_json(body.decode("utf-8", "replace"))).tag
            except ValidationError as e:
                raise InputError(f'send {{"tag": "<task>:<version>" or "latest"}}: {e.errors()[0]["msg"]}', 422) from e
            await asyncio.to_thread(versions.pin, check_text(tag, "tag"))
        except InputError as e:
            return error_response(e)
        except NotInStore as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        except (Incomplete, Busy) as e:
            return JSONResponse({"error": str(e)}, status_code=409)
        except Exception as e:  # a tag BentoML refuses, another task's entry, a load that failed (logged by it):
            # the version serving before still serves
            return JSONResponse({"error": f"{type(e).__name__}: {e}".splitlines()[0]}, status_code=422)
        status = await asyncio.to_thread(versions.status)
        return Response(status.model_dump_json(), media_type="application/json")

    errors = {
        **ERROR_RESPONSES,
        404: {"model": ERROR_RESPONSES[400]["model"], "description": "No such version in the store"},
        409: {"model": ERROR_RESPONSES[400]["model"], "description": "Its export has not landed, or a load is running"},
    }
    app.add_api_route(
        "/models",
        models,
        methods=["GET"],
        name="models",
        summary="The versions of this task's model: which one serves, pinned or following the newest, and why not",
        response_model=ModelsStatus,
    )
    app.add_api_route(
        "/models",
        pin,
        methods=["POST"],
        name="models_pin",
        summary="Load and pin a version (the one serving keeps serving if it fails), or follow the newest again",
        response_model=ModelsStatus,
        responses=errors,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PinRequest.model_json_schema()}},
            }
        },
    )


def make_service(cls: type[TaskService], name: str, description: str, args: CommonArgs, **attrs: Any):
    """The BentoML service of task ``name``: its own class (``Name``), routes under ``/v1/<name>``, the model it
    serves declared (so ``bentoml build`` packages it), readiness, and optional API keys."""
    import bentoml

    tag = args.model_tag or f"{name}:latest"
    sub = type(
        name.capitalize(),
        (cls,),
        {
            "__doc__": description,
            "__module__": cls.__module__,
            "task": name,
            "args": args,
            **declared_model(tag),
            "shutdown": bentoml.on_shutdown(lambda self: TaskService.shutdown(self)),
            **attrs,
        },
    )
    app = make_app(name, description, cls.routes + ((NOOP,) if args.noop_route else ()))
    endpoints = {"livez": "/livez", "readyz": "/readyz"}
    svc = bentoml.service(
        name=name,
        traffic={"timeout": args.timeout_s},
        workers=1,
        endpoints=endpoints,
        logging={"access": {"enabled": args.access_log}},
        tracing={} if args.tracing else {"excluded_urls": [f"/v1/{name}/"]},
        metrics={"enabled": False},  # BentoML's label requests by raw path: ours below, by route
    )(bentoml.asgi_app(app, path=f"/v1/{name}")(sub))
    add_middlewares(svc, name, app_paths(app, f"/v1/{name}"))
    args.install()
    return svc


def declared_model(tag: str) -> dict[str, Any]:
    """``model_ref``, the model ``bentoml build`` packages with the service, when the store has it. BentoML
    refuses to serve a service whose declared model is missing, and this one starts without a model and loads it
    when it lands (services/versions.py): so it is declared only when it is there to be packaged."""
    import bentoml

    from services.bentoml_private import model_store_dir

    name, _, version = tag.partition(":")
    if not (model_store_dir() / name / ("latest" if version in ("", "latest") else version)).exists():
        return {}
    return {"model_ref": bentoml.models.BentoModel(tag)}


SYSTEM_PATHS = ("/", "/docs", "/docs.json", "/schema.json", "/livez", "/readyz", "/healthz", "/metrics")


def app_paths(app, prefix: str) -> list[str]:
    """Every path ``app`` (mounted at ``prefix``) serves: its routes, docs and OpenAPI document."""
    return [prefix + route.path for route in app.routes if isinstance(getattr(route, "path", None), str)]


def add_middlewares(svc, name: str, paths: list[str], prefixes: tuple[str, ...] = ()) -> None:
    """The middlewares of every server of the suite, outermost first: request metrics by route (``paths`` and the
    system paths; anything else is "other"), optional API keys (services/security.py), then ``/metrics``."""
    from services.metrics import MetricsEndpoint, RequestMetrics
    from services.security import ApiKeyMiddleware

    svc.add_asgi_middleware(RequestMetrics, service=name, known=[*SYSTEM_PATHS, *paths], prefixes=prefixes)
    svc.add_asgi_middleware(ApiKeyMiddleware)
    svc.add_asgi_middleware(MetricsEndpoint)
