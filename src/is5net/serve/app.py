"""The HTTP API and the page of ``is5net serve`` (FastAPI): :func:`create_app` assembles them.

The routes are in :mod:`.routes`, the models in :mod:`.engine`, the Host and token checks in :mod:`.access`.

Endpoints (OpenAPI at ``/docs``; every error is ``{"error": "<one line>"}`` with a 4xx status, 5xx only for
a timeout, a request cut off by Ctrl-C (:mod:`.stopping`) or a bug):

- ``POST /api/segment`` (multipart): ``image`` file, ``box`` ``x0,y0,x1,y1`` (repeatable), optional
  ``coarse_mask`` file, ``threshold`` (number in [0, 1] or ``otsu``), ``format`` ``png`` | ``cutout`` | ``json``,
  ``region`` ``image`` | ``box`` | ``tiles`` (what the refiner sees; default the server's ``--region``).
- ``POST /api/images`` (multipart ``image``) -> ``{"id", "width", "height"}``; then
  ``POST /api/images/{id}/segment`` with JSON ``{"boxes": [[x0, y0, x1, y1], ...], "threshold", "format"}``
  answers from the embedding cache (404 once the image was evicted: upload it again).
- ``GET /api/health``: status, versions, device, models, cache use, queue length.
- ``GET /``: the page (static files in this package; nothing from a CDN).
- With ``--label-studio``: Label Studio's ML-backend protocol under ``/label-studio/`` (:mod:`.label_studio`).

Masks are :func:`is5net.inference.outputs.mask_uint8` of the predictions, as ``is5net predict`` writes them; several
boxes give their union (``png``, ``cutout``) or one mask each (``json``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .access import Guard
from .engine import Engine
from .errors import ApiError, error_response
from .routes import STATIC, api, page_router
from .upload import Uploads

log = logging.getLogger("is5net.serve")


@dataclass
class Options:
    token: Optional[str] = None  # Bearer token every /api/ request must carry (None: no token)
    cors: list[str] = field(default_factory=list)  # origins allowed to call the API from their pages
    ui: bool = True  # serve the page at /
    loopback_only: bool = True  # bound to a loopback address: refuse other Host names (DNS rebinding)
    label_studio: Optional[Any] = None  # label_studio.LabelStudioOptions: answer Label Studio at /label-studio/


def create_app(engine: Engine, options: Options, info: Optional[dict] = None) -> FastAPI:
    """The ASGI app around a running :class:`Engine` (``info``: what ``/api/health`` reports as models)."""
    app = FastAPI(
        title="is5net serve",
        version=__version__,
        description="Box-prompted segmentation: SAM (or GrabCut) gives a coarse mask, IS5Net refines it.",
    )
    app.state.engine, app.state.info = engine, dict(info or {})
    limits = engine.limits
    app.state.uploads = Uploads(
        limits.max_upload_bytes, limits.max_uploads, limits.upload_timeout_s, engine.tmp_dir, engine.stopping
    )
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _bug)
    app.include_router(api)
    if options.label_studio is not None:
        from .label_studio import LabelStudioKey, LabelStudioState, router

        ls = options.label_studio
        app.state.label_studio = LabelStudioState(ls, LabelStudioKey(ls.api_key, ls.url))
        app.include_router(router)
    if options.ui:
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
        app.include_router(page_router)
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


# ------------------------------------------------------------------- every error is {"error": "..."}
async def _api_error(_request: Request, exc: ApiError):
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(_request: Request, exc: StarletteHTTPException):
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return error_response(exc.status_code, message, getattr(exc, "headers", None))


async def _validation_error(_request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")


async def _bug(_request: Request, exc: Exception):
    log.exception("unexpected error while answering a request")
    return error_response(500, f"internal error ({exc.__class__.__name__}); the server's log has the details")


# ------------------------------------------------------------------------------------ stopping in time
def serve_forever(app: FastAPI, **config) -> bool:
    """Run uvicorn on ``app`` until Ctrl-C (``config``: :class:`uvicorn.Config`'s); whether it ever started.

    As ``uvicorn.run``, but the server first tells the engine it is stopping (:mod:`.stopping`), with a grace
    one second shorter than uvicorn's own, so that every request in flight is answered before uvicorn would
    cancel it.
    """
    import uvicorn

    class StoppableServer(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            app.state.engine.stopping.begin(self.config.timeout_graceful_shutdown - 1.0)
            await super().shutdown(sockets)

    server = StoppableServer(uvicorn.Config(app, **config))
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # a second Ctrl-C while stopping, as uvicorn.run takes it
    return server.started
