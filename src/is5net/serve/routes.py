"""The routes of ``is5net serve``: the API under ``/api/`` and the page at ``/``.

They are plain module-level functions on two routers; what they serve comes through FastAPI's dependencies
from ``app.state`` (:func:`.app.create_app` puts the :class:`Engine` and the health ``info`` there), so a
route reads as what it does with a request. Fields are checked here, each refusal a 422 that names the field;
the model work runs in the engine's worker.
"""

from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .. import __version__
from ..contract import REGIONS
from ..errors import BoxError, IS5NetError
from ..inference.boxes import MAX_CLICKS, boxes_from_json, clicks_of_boxes, parse_box, parse_points
from ..inference.outputs import parse_threshold
from .engine import FORMATS, MAX_BOXES, Engine
from .errors import ApiError
from .openapi import JSON_SEGMENT, MULTIPART_IMAGE, MULTIPART_SEGMENT
from .upload import Form, Uploads, read_form, read_json

STATIC = Path(__file__).resolve().parent / "static"
JSON_KEYS = ("boxes", "points", "point_labels", "threshold", "format", "region")
IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
# The page's own policy: its scripts, styles and images come from this server only (no CDN, works offline).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# Async, so that FastAPI calls them on the event loop rather than handing each to a thread.
async def _engine(request: Request) -> Engine:
    return request.app.state.engine


async def _info(request: Request) -> dict:
    return request.app.state.info


async def _uploads(request: Request) -> Uploads:
    return request.app.state.uploads


EngineDep = Annotated[Engine, Depends(_engine)]
InfoDep = Annotated[dict, Depends(_info)]
UploadsDep = Annotated[Uploads, Depends(_uploads)]

api = APIRouter()
page_router = APIRouter()


# ------------------------------------------------------------------------------------------- the API
@api.get("/api/health", summary="status, versions, device, models, cache use, queue length")
async def health(engine: EngineDep, info: InfoDep) -> dict:
    import fastapi
    import torch
    import uvicorn

    limits = engine.limits
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
            "max_uploads": limits.max_uploads,
            "upload_timeout_s": limits.upload_timeout_s,
        },
        **info,
    }


@api.post(
    "/api/images",
    summary="upload an image: its embedding is computed once and cached",
    openapi_extra=MULTIPART_IMAGE,
)
async def upload_image(request: Request, engine: EngineDep, uploads: UploadsDep):
    started = time.perf_counter()
    form = await read_form(request, uploads, frozenset({"image"}), frozenset())
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


@api.post(
    "/api/images/{image_id}/segment",
    summary="segment boxes of an uploaded image (from the cache)",
    openapi_extra=JSON_SEGMENT,
)
async def segment_cached(image_id: str, request: Request, engine: EngineDep, uploads: UploadsDep):
    started = time.perf_counter()
    body = await read_json(request, uploads)
    if not isinstance(body, dict):
        raise ApiError(422, 'expected a JSON object {"boxes": [[x0, y0, x1, y1], ...], ...}')
    unknown = sorted(set(body) - set(JSON_KEYS))
    if unknown:
        raise ApiError(422, f"unknown key {unknown[0]!r}; expected {', '.join(JSON_KEYS)}")
    boxes = _boxes_from_json(body.get("boxes"))
    clicks = _json_clicks(body.get("points"), body.get("point_labels"), len(boxes))
    threshold, fmt = _threshold(body.get("threshold")), _format(body.get("format"))
    region = _region(body.get("region"))
    entry = engine.cache.get(image_id) if IMAGE_ID.match(image_id) else None
    if entry is None:
        raise ApiError(
            404,
            f"no image {image_id[:16]}... in the cache (evicted, or never uploaded): upload it "
            "again with POST /api/images",
        )
    result = await engine.run(engine.segment, entry, boxes, threshold, fmt, None, None, region, clicks)
    result["cached"] = True
    return _answer(result, fmt, started, entry.id)


@api.post("/api/segment", summary="segment boxes of an image in one request", openapi_extra=MULTIPART_SEGMENT)
async def segment(request: Request, engine: EngineDep, uploads: UploadsDep):
    started = time.perf_counter()
    form = await read_form(
        request,
        uploads,
        frozenset({"image", "coarse_mask"}),
        frozenset({"box", "points", "threshold", "format", "region"}),
    )
    try:
        upload = form.file("image")
        boxes = _form_boxes(form)
        clicks = _form_clicks(form, len(boxes))
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
            clicks,
        )
    finally:
        form.close()
    return _answer(result, fmt, started, upload.sha256)


# ------------------------------------------------------------------------------------------ the page
@page_router.get("/", include_in_schema=False)
async def page():
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
    )


# ------------------------------------------------------------------------------ fields and answers
def _form_boxes(form: Form) -> list:
    texts = form.fields.get("box", [])
    if not texts:
        raise ApiError(422, "no box: give one or more 'box' fields x0,y0,x1,y1")
    if len(texts) > MAX_BOXES:
        raise ApiError(422, f"{len(texts)} boxes: at most {MAX_BOXES} per request")
    try:
        return [parse_box(t) for t in texts]
    except IS5NetError as exc:
        raise ApiError(422, str(exc)) from None


def _form_clicks(form: Form, n_boxes: int) -> Optional[list]:
    """The ``points`` fields: one per box, in the boxes' order ("x,y x,y:0 ...", empty for a box without clicks)."""
    texts = form.fields.get("points", [])
    if not texts:
        return None
    if len(texts) != n_boxes:
        raise ApiError(
            422,
            f"{len(texts)} 'points' fields for {n_boxes} boxes: give one per box, in the order of the 'box' "
            "fields (an empty one for a box without clicks)",
        )
    clicks = []
    for k, text in enumerate(texts):
        where = "points" if n_boxes == 1 else f"points of box {k}"
        try:
            points, labels = parse_points([text], where)
        except IS5NetError as exc:
            raise ApiError(422, str(exc)) from None
        if len(points) > MAX_CLICKS:
            raise ApiError(422, f"{where}: {len(points)} clicks; at most {MAX_CLICKS} per box")
        clicks.append((points, labels) if points else None)
    return clicks if any(c is not None for c in clicks) else None


def _json_clicks(points: Any, labels: Any, n_boxes: int) -> Optional[list]:
    try:
        return clicks_of_boxes(points, labels, n_boxes)
    except BoxError as exc:
        raise ApiError(422, str(exc)) from None


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


def _timing_header(timings: dict) -> str:
    return ", ".join(f"{k};dur={v}" for k, v in timings.items())


def _answer(result: dict, fmt: str, started: float, image_id: str) -> Response:
    timings = dict(result.get("timings_ms", {}))
    timings["total"] = round((time.perf_counter() - started) * 1000, 2)
    headers = {"Server-Timing": _timing_header(timings), "X-Image-Id": image_id}
    if fmt == "json":
        body = {k: v for k, v in result.items() if k != "png"}
        body["timings_ms"] = timings
        return JSONResponse(body, headers=headers)
    return Response(result["png"], media_type="image/png", headers=headers)
