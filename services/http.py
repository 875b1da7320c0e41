"""HTTP helpers every task service shares: bounded body reading, uploads, base64 JSON, error responses.

Every client mistake becomes an :class:`~tasks.images.InputError` and leaves as ``{"error": message}`` with its
4xx status; nothing about the payload is logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from tasks.images import InputError

T = TypeVar("T")


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong with the request, in plain words")


ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "Malformed request or undecodable input"},
    413: {"model": ErrorResponse, "description": "Body, image or batch larger than the configured limits"},
    415: {"model": ErrorResponse, "description": "Unsupported content type or image format"},
    422: {"model": ErrorResponse, "description": "Well-formed but unusable input (e.g. image too small)"},
}


def error_response(e: InputError) -> JSONResponse:
    headers = {"Retry-After": "10"} if e.status == 503 else None  # a model not loaded yet
    return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InputError("invalid Content-Length header", 400)
        if int(declared) > limit:
            raise InputError(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Upload:
    data: bytes | bytearray
    filename: str | None = None


MAX_JSON_DIGITS = 64  # a number in a request needs no more; Python refuses past 4,300 digits, and slowly
INLINE_BYTES = 64 * 1024  # bodies past this are parsed on a worker thread, not on the event loop


def _bounded_int(text: str) -> int:
    if len(text) > MAX_JSON_DIGITS:
        raise InputError(f"invalid JSON body: a number of {len(text)} digits (at most {MAX_JSON_DIGITS})", 400)
    return int(text)


def loads_json(body: bytes | str) -> object:
    """A JSON body, every failure a 400 that says why: bad syntax or UTF-8, nesting too deep, numbers too long."""
    try:
        return json.loads(body, parse_int=_bounded_int)
    except RecursionError:
        raise InputError("invalid JSON body: nested too deep", 400) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"invalid JSON body: {e}", 400) from e


async def off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, on a worker thread when its input of ``size`` bytes is large (its cost grows with it)."""
    return fn(*args) if size <= INLINE_BYTES else await asyncio.to_thread(fn, *args)


def check_text(text: str, where: str = "text") -> str:
    """``text`` if it is all Unicode scalar values (JSON's ``\\ud800`` escapes can give lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{where}: a lone surrogate (U+{ord(text[e.start]):04X}) at character {e.start}", 400) from e
    return text


def decode_b64(value: object, where: str) -> bytes:
    """Base64 as RFC 2045 writes it too (line breaks, as the ``base64`` tool wraps it, are ignored); a data URL's
    payload; anything else outside the alphabet is a 400."""
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a base64 string", 400)
    if value.startswith("data:") and "," in value:  # accept data URLs as browsers produce them
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value.translate(_LINE_BREAKS), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"{where}: invalid base64 ({e})", 400) from e


_LINE_BREAKS = str.maketrans("", "", "\r\n")


async def parse_uploads(
    request: Request, limit: int, field: str, many: bool, max_files: int, raw_types: tuple[str, ...] = ("image/",)
) -> tuple[list[Upload], dict[str, object]]:
    """Files from a multipart form (field ``field``), a JSON body (base64 under ``field``) or, for single-file
    routes, a raw body whose content type is one of ``raw_types`` (a trailing ``/`` takes any subtype). The body
    is refused past ``limit`` bytes. Returns the uploads and the other JSON / form fields."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await read_multipart(request, limit, field, many, max_files)
    if ctype == "application/json":
        body = await read_body(request, limit)
        return await off_loop(len(body), json_uploads, body, field, many, max_files)
    if not many and any(ctype.startswith(t) if t.endswith("/") else ctype == t for t in raw_types):
        return [Upload(await read_body(request, limit))], {}
    accepted = "multipart/form-data, application/json" + (
        "" if many else " or " + ", ".join(t + ("*" if t.endswith("/") else "") for t in raw_types)
    )
    raise InputError(f"unsupported content type {ctype or '(none)'!r}: send {accepted}", 415)


MAX_FORM_FIELDS = 32
MAX_FIELD_BYTES = 64 * 1024


def json_uploads(body: bytes, field: str, many: bool, max_files: int) -> tuple[list[Upload], dict[str, object]]:
    """The base64 files under ``field`` of a JSON body, and its other fields."""
    doc = loads_json(body)
    del body
    if not isinstance(doc, dict) or field not in doc:
        raise InputError(f"JSON body must be an object with a {field!r} field", 400)
    values = doc.pop(field)
    if not many:
        return [Upload(decode_b64(values, field))], doc
    if not isinstance(values, list) or not values:
        raise InputError(f"{field!r} must be a non-empty list of base64 strings", 400)
    if len(values) > max_files:
        raise InputError(f"{len(values)} files in one request; the limit is {max_files}", 413)
    return [Upload(decode_b64(v, f"{field}[{i}]")) for i, v in enumerate(values)], doc


async def read_multipart(
    request: Request, limit: int, field: str, many: bool, max_files: int
) -> tuple[list[Upload], dict[str, object]]:
    """A multipart form parsed as it streams in: each file's bytes are held once (no copy of the whole body, no
    temporary file), the body is refused past ``limit`` bytes, the files past ``max_files``."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise InputError("malformed multipart body: the content type has no boundary", 400)
    files: list[Upload] = []  # the files in ``field``, each read straight into its own buffer
    fields: dict[str, bytearray] = {}  # the other, short, text fields (options)
    header = {"name": bytearray(), "value": bytearray(), "disposition": b""}
    sink: list = [None, 0]  # where the current part's bytes go (None: a part no one reads), and their cap

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if bytes(header["name"]).lower() == b"content-disposition":
            header["disposition"] = bytes(header["value"])
        header["name"], header["value"] = bytearray(), bytearray()

    def on_headers_finished() -> None:
        _, opts = parse_options_header(header["disposition"])
        header["disposition"] = b""
        name, filename = opts.get(b"name", b"").decode("utf-8", "replace"), opts.get(b"filename")
        if filename is not None:
            sink[:] = [None, 0]  # a file in another field is skipped, not held
            if name == field:
                if not many and files:
                    raise InputError(f"one file expected in {field!r}, got more: use the batch route", 400)
                if len(files) >= max_files:
                    raise InputError(f"more than {max_files} files in one request; the limit is {max_files}", 413)
                files.append(Upload(bytearray(), filename.decode("utf-8", "replace") or None))
                sink[:] = [files[-1].data, limit]
        else:
            if len(fields) >= MAX_FORM_FIELDS:
                raise InputError(f"more than {MAX_FORM_FIELDS} form fields", 400)
            if name in fields:
                raise InputError(f"form field {name!r} given more than once", 422)
            sink[:] = [fields.setdefault(name, bytearray()), MAX_FIELD_BYTES]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        buf, cap = sink
        if buf is not None:
            buf += data[start:end]
            if len(buf) > cap:
                raise InputError(f"a form field is longer than {cap} bytes", 413)

    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(boundary, callbacks)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes", 413)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InputError(f"request body exceeds the limit of {limit} bytes", 413)
            parser.write(chunk)
        parser.finalize()
    except InputError:
        raise
    except Exception as e:  # python-multipart raises its own types on broken boundaries
        raise InputError(f"malformed multipart body: {e}", 400) from e
    if not files:
        raise InputError(f"multipart body has no file in field {field!r}", 400)
    extra: dict[str, object] = {}
    for name, value in fields.items():
        if name and name != field:
            try:
                extra[name] = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"form field {name!r} is not UTF-8", 400) from e
    return files, extra  # each file's bytearray as it was filled: no copy


def install_error_handlers(app) -> None:
    """Answer FastAPI's own parameter validation failures in the suite's ``{"error": ...}`` shape (422)."""
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)
