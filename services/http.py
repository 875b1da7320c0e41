"""HTTP helpers every task service shares: bounded body reading, uploads, base64 JSON, error responses.

Every client mistake becomes an :class:`~tasks.images.InputError` and leaves as ``{"error": message}`` with its
4xx status; nothing about the payload is logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from tasks.images import InputError


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong with the request, in plain words")


ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "Malformed request or undecodable input"},
    413: {"model": ErrorResponse, "description": "Body, image or batch larger than the configured limits"},
    415: {"model": ErrorResponse, "description": "Unsupported content type or image format"},
    422: {"model": ErrorResponse, "description": "Well-formed but unusable input (e.g. image too small)"},
}


def error_response(e: InputError) -> JSONResponse:
    return JSONResponse({"error": str(e)}, status_code=e.status)


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
    data: bytes
    filename: str | None = None


def decode_b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a base64 string", 400)
    if value.startswith("data:") and "," in value:  # accept data URLs as browsers produce them
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"{where}: invalid base64 ({e})", 400) from e


async def parse_uploads(
    request: Request, body: bytes, field: str, many: bool, max_files: int, raw_types: tuple[str, ...] = ("image/",)
) -> tuple[list[Upload], dict[str, object]]:
    """Files from a multipart form (field ``field``), a JSON body (base64 under ``field``) or, for single-file
    routes, a raw body whose content type starts with one of ``raw_types``. Returns the uploads and the other
    JSON / form fields."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _parse_multipart(request, body, field, many, max_files)
    if ctype == "application/json":
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"invalid JSON body: {e}", 400) from e
        if not isinstance(doc, dict) or field not in doc:
            raise InputError(f"JSON body must be an object with a {field!r} field", 400)
        values = doc.pop(field)
        if many:
            if not isinstance(values, list) or not values:
                raise InputError(f"{field!r} must be a non-empty list of base64 strings", 400)
            if len(values) > max_files:
                raise InputError(f"{len(values)} images in one request; the limit is {max_files}", 413)
            return [Upload(decode_b64(v, f"{field}[{i}]")) for i, v in enumerate(values)], doc
        return [Upload(decode_b64(values, field))], doc
    if not many and ctype.startswith(raw_types):
        return [Upload(body)], {}
    accepted = "multipart/form-data, application/json" + (
        "" if many else " or " + ", ".join(t + ("*" if t.endswith("/") else "") for t in raw_types)
    )
    raise InputError(f"unsupported content type {ctype or '(none)'!r}: send {accepted}", 415)


async def _parse_multipart(
    request: Request, body: bytes, field: str, many: bool, max_files: int
) -> tuple[list[Upload], dict[str, object]]:
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_files + 1, max_fields=32)
    except HTTPException as e:
        raise InputError(f"malformed multipart body: {e.detail}", 400) from e
    except Exception as e:  # python-multipart raises its own types on broken boundaries
        raise InputError(f"malformed multipart body: {e}", 400) from e
    try:
        files = [v for v in form.getlist(field) if isinstance(v, UploadFile)]
        if not files:
            raise InputError(f"multipart body has no file in field {field!r}", 400)
        if len(files) > max_files:
            raise InputError(f"{len(files)} images in one request; the limit is {max_files}", 413)
        if not many and len(files) > 1:
            raise InputError(f"one file expected in {field!r}, got {len(files)}: use the batch route", 400)
        uploads = [Upload(await f.read(), f.filename) for f in files]
        extra = {k: v for k, v in form.items() if k != field and isinstance(v, str)}
        return uploads, extra
    finally:
        await form.close()


def flag(value: object, name: str) -> bool:
    """A boolean request option given as JSON true/false or a form / query string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise InputError(f"{name} must be true or false", 400)


def install_error_handlers(app) -> None:
    """Answer FastAPI's own parameter validation failures in the suite's ``{"error": ...}`` shape (422), and
    every route with 503 while the service's model is not loaded (:class:`services.lifecycle.ReadinessGate`)."""
    from fastapi.exceptions import RequestValidationError

    from services.lifecycle import ReadinessGate

    app.add_middleware(ReadinessGate)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)


LARGE_PAYLOAD = 256 * 1024


async def decode_off_loop_if_large(fn, data: bytes, *args):
    """``fn(data, *args)``: inline for small payloads (cheaper than a thread hop), in a worker thread for large
    ones, so that decoding a multi-megabyte upload does not hold the event loop."""
    if len(data) < LARGE_PAYLOAD:
        return fn(data, *args)
    return await asyncio.to_thread(fn, data, *args)
