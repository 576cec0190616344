"""The HTTP API and the page of ``is5net serve`` (FastAPI; the models live in :mod:`.engine`).

Endpoints (OpenAPI at ``/docs``; every error is ``{"error": "<one line>"}`` with a 4xx status, 5xx only for
a timeout or a bug):

- ``POST /api/segment`` (multipart): ``image`` file, ``box`` ``x0,y0,x1,y1`` (repeatable), optional
  ``coarse_mask`` file, ``threshold`` (number in [0, 1] or ``otsu``), ``format`` ``png`` | ``cutout`` | ``json``,
  ``region`` ``image`` | ``box`` | ``tiles`` (what the refiner sees; default the server's ``--region``).
- ``POST /api/images`` (multipart ``image``) -> ``{"id", "width", "height"}``; then
  ``POST /api/images/{id}/segment`` with JSON ``{"boxes": [[x0, y0, x1, y1], ...], "threshold", "format"}``
  answers from the embedding cache (404 once the image was evicted: upload it again).
- ``GET /api/health``: status, versions, device, models, cache use, queue length.
- ``GET /``: the page (static files in this package; nothing from a CDN).

Masks are :func:`is5net.inference.outputs.mask_uint8` of the predictions, as ``is5net predict`` writes them; several
boxes give their union (``png``, ``cutout``) or one mask each (``json``).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..contract import REGIONS
from ..errors import BoxError, IS5NetError
from ..inference.boxes import boxes_from_json, parse_box
from ..inference.outputs import parse_threshold
from .engine import FORMATS, MAX_BOXES, Engine
from .errors import ApiError
from .upload import read_form, read_json

log = logging.getLogger("is5net.serve")

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 1 << 20
IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
# The page's own policy: its scripts, styles and images come from this server only (no CDN, works offline).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass
class Options:
    token: Optional[str] = None  # Bearer token every /api/ request must carry (None: no token)
    cors: list[str] = field(default_factory=list)  # origins allowed to call the API from their pages
    ui: bool = True  # serve the page at /
    loopback_only: bool = True  # bound to a loopback address: refuse other Host names (DNS rebinding)


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: the Host check (loopback binds) and the token (``/api/``), before any body is read."""

    def __init__(self, app, options: Options):
        self.app, self.options = app, options

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.options.loopback_only and not _loopback_host(headers.get("host", "")):
            # A page on another site can make a browser send requests to 127.0.0.1 under its own host name
            # (DNS rebinding); a server on the loopback answers only to its loopback names.
            return await _error(400, "Host header is not a loopback name (this server listens on the loopback only)")(
                scope, receive, send
            )
        path = scope.get("path", "")
        if self.options.token and path.startswith("/api/") and scope.get("method") != "OPTIONS":
            given = headers.get("authorization", "")
            expected = f"Bearer {self.options.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return await _error(
                    401,
                    "missing or wrong token: send 'Authorization: Bearer <token>' (the "
                    "token given to is5net serve --token)",
                    {"WWW-Authenticate": "Bearer"},
                )(scope, receive, send)
        await self.app(scope, receive, send)


def _loopback_host(host: str) -> bool:
    name = host.strip()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _timing_header(timings: dict) -> str:
    return ", ".join(f"{k};dur={v}" for k, v in timings.items())


def _boxes_from_json(value: Any) -> list[list[float]]:
    try:
        return boxes_from_json(value, MAX_BOXES)
    except BoxError as exc:
        raise ApiError(422, str(exc)) from None


def _threshold(value: Any):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(422, f"threshold {json.dumps(value)[:40]}: expected a number in [0, 1] or 'otsu'")
    try:
        return parse_threshold(str(value), "threshold")
    except IS5NetError as exc:
        raise ApiError(422, str(exc)) from None


def _format(value: Any) -> str:
    fmt = "png" if value is None or value == "" else value
    if fmt not in FORMATS:
        raise ApiError(422, f"format {json.dumps(value)[:40]}: choose one of {', '.join(FORMATS)}")
    return fmt


def _region(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if value not in REGIONS:
        raise ApiError(422, f"region {json.dumps(value)[:40]}: choose one of {', '.join(REGIONS)}")
    return value


def _answer(result: dict, fmt: str, started: float, image_id: str) -> Response:
    timings = dict(result.get("timings_ms", {}))
    timings["total"] = round((time.perf_counter() - started) * 1000, 2)
    headers = {"Server-Timing": _timing_header(timings), "X-Image-Id": image_id}
    if fmt == "json":
        body = {k: v for k, v in result.items() if k != "png"}
        body["timings_ms"] = timings
        return JSONResponse(body, headers=headers)
    return Response(result["png"], media_type="image/png", headers=headers)


_MULTIPART_SEGMENT = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "box"],
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "the image (any format Pillow reads)",
                        },
                        "box": {
                            "type": "array",
                            "items": {"type": "string", "example": "60,40,230,170"},
                            "description": "x0,y0,x1,y1 in pixels of the image as displayed (EXIF applied); repeatable",
                        },
                        "coarse_mask": {
                            "type": "string",
                            "format": "binary",
                            "description": "optional stage-1 mask (image size) used instead of stage 1's",
                        },
                        "threshold": {
                            "type": "string",
                            "description": "a number in [0, 1] or 'otsu' (default: the soft map)",
                        },
                        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
                        "region": {
                            "type": "string",
                            "enum": list(REGIONS),
                            "description": "what the refiner sees (default: the server's --region)",
                        },
                    },
                }
            }
        },
    },
    "responses": {
        "200": {"description": "PNG mask or cutout, or JSON", "content": {"image/png": {}, "application/json": {}}}
    },
}
_MULTIPART_IMAGE = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}
_JSON_SEGMENT = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["boxes"],
                    "properties": {
                        "boxes": {
                            "type": "array",
                            "items": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                        },
                        "threshold": {
                            "oneOf": [{"type": "number"}, {"type": "string", "enum": ["otsu"]}],
                            "nullable": True,
                        },
                        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
                        "region": {"type": "string", "enum": list(REGIONS)},
                    },
                }
            }
        },
    }
}


def create_app(engine: Engine, options: Options, info: Optional[dict] = None) -> FastAPI:
    """The ASGI app around a running :class:`Engine` (``info``: what ``/api/health`` reports as models)."""
    app = FastAPI(
        title="is5net serve",
        version=__version__,
        description="Box-prompted segmentation: SAM (or GrabCut) gives a coarse mask, IS5Net refines it.",
    )
    info = dict(info or {})
    limits = engine.limits

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception):
        log.exception("unexpected error while answering a request")
        return _error(500, f"internal error ({exc.__class__.__name__}); the server's log has the details")

    @app.get("/api/health", summary="status, versions, device, models, cache use, queue length")
    async def health() -> dict:
        import fastapi
        import torch
        import uvicorn

        return {
            "status": "ok",
            "version": __version__,
            "versions": {
                "is5net": __version__,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "fastapi": fastapi.__version__,
                "uvicorn": uvicorn.__version__,
            },
            "device": str(engine.models.device),
            "precision": engine.models.precision,
            "stage1": engine.models.stage1,
            "refiner": engine.models.refiner_info,
            **engine.health(),
            "limits": {
                "max_upload_bytes": limits.max_upload_bytes,
                "max_pixels": limits.max_pixels,
                "timeout_s": limits.timeout_s,
                "max_boxes": MAX_BOXES,
            },
            **info,
        }

    @app.post(
        "/api/images",
        summary="upload an image: its embedding is computed once and cached",
        openapi_extra=_MULTIPART_IMAGE,
    )
    async def upload_image(request: Request):
        started = time.perf_counter()
        form = await read_form(request, limits.max_upload_bytes, engine.tmp_dir, frozenset({"image"}), frozenset())
        try:
            upload = form.file("image")
            entry = engine.cache.get(upload.sha256)
            if entry is not None:
                result = {"entry": entry, "cached": True, "timings_ms": {}}
            else:
                result = await engine.run(engine.load, upload.path, upload.sha256, upload.filename)
        finally:
            form.close()
        entry = result["entry"]
        timings = {**result["timings_ms"], "total": round((time.perf_counter() - started) * 1000, 2)}
        return JSONResponse(
            {
                "id": entry.id,
                "width": entry.width,
                "height": entry.height,
                "cached": result["cached"],
                "timings_ms": timings,
            },
            headers={"Server-Timing": _timing_header(timings)},
        )

    @app.post(
        "/api/images/{image_id}/segment",
        summary="segment boxes of an uploaded image (from the cache)",
        openapi_extra=_JSON_SEGMENT,
    )
    async def segment_cached(image_id: str, request: Request):
        started = time.perf_counter()
        body = await read_json(request, MAX_JSON_BYTES)
        if not isinstance(body, dict):
            raise ApiError(422, 'expected a JSON object {"boxes": [[x0, y0, x1, y1], ...], ...}')
        unknown = sorted(set(body) - {"boxes", "threshold", "format", "region"})
        if unknown:
            raise ApiError(422, f"unknown key {unknown[0]!r}; expected boxes, threshold, format, region")
        boxes = _boxes_from_json(body.get("boxes"))
        threshold, fmt = _threshold(body.get("threshold")), _format(body.get("format"))
        region = _region(body.get("region"))
        entry = engine.cache.get(image_id) if IMAGE_ID.match(image_id) else None
        if entry is None:
            raise ApiError(
                404,
                f"no image {image_id[:16]}... in the cache (evicted, or never uploaded): upload it "
                "again with POST /api/images",
            )
        result = await engine.run(engine.segment, entry, boxes, threshold, fmt, None, None, region)
        result["cached"] = True
        return _answer(result, fmt, started, entry.id)

    @app.post("/api/segment", summary="segment boxes of an image in one request", openapi_extra=_MULTIPART_SEGMENT)
    async def segment(request: Request):
        started = time.perf_counter()
        form = await read_form(
            request,
            limits.max_upload_bytes,
            engine.tmp_dir,
            frozenset({"image", "coarse_mask"}),
            frozenset({"box", "threshold", "format", "region"}),
        )
        try:
            upload = form.file("image")
            texts = form.fields.get("box", [])
            if not texts:
                raise ApiError(422, "no box: give one or more 'box' fields x0,y0,x1,y1")
            if len(texts) > MAX_BOXES:
                raise ApiError(422, f"{len(texts)} boxes: at most {MAX_BOXES} per request")
            try:
                boxes = [parse_box(t) for t in texts]
            except IS5NetError as exc:
                raise ApiError(422, str(exc)) from None
            threshold, fmt = _threshold(form.text("threshold")), _format(form.text("format"))
            region = _region(form.text("region"))
            coarse = form.file("coarse_mask", required=False)
            result = await engine.run(
                engine.load_and_segment,
                upload.path,
                upload.sha256,
                upload.filename,
                boxes,
                threshold,
                fmt,
                None if coarse is None else (coarse.path, coarse.filename),
                region,
            )
        finally:
            form.close()
        return _answer(result, fmt, started, upload.sha256)

    if options.ui:
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def page():
            return FileResponse(
                STATIC / "index.html",
                media_type="text/html",
                headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
            )

    app.add_middleware(Guard, options=options)
    if options.cors:
        from fastapi.middleware.cors import CORSMiddleware

        # Added last, so it runs first: a preflight OPTIONS is answered before the token check.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=options.cors,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-Image-Id"],
        )
    return app
