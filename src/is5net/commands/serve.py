"""``is5net serve``: load the models once, then answer the page and the HTTP API with uvicorn.

Safe by default: it binds 127.0.0.1; another address needs ``--token`` (every ``/api/`` request then carries
``Authorization: Bearer <token>``) or an explicit ``--insecure``, and says so. Nothing is written to disk but
uploads in a private temporary folder, each removed when its request ends (the folder at exit).
``--label-studio`` adds Label Studio's ML-backend protocol under ``/label-studio/`` (docs/label-studio.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from .. import __version__, interrupts
from ..errors import IS5NetError
from .options import calibration_from_args, positive_int, region_arguments, runtime_arguments, stage1_arguments

log = logging.getLogger("is5net")


def positive_float(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A local web page and HTTP API: draw a box in the browser, get the mask (FastAPI + uvicorn).

    The models load once; inference runs in one worker, a bounded queue answers 429 when full. Binds
    127.0.0.1 by default: another --host needs --token (or $IS5NET_SERVE_TOKEN) or --insecure. Without SAM
    weights, --stage1 grabcut makes the coarse mask (and is5net demo's refiner.safetensors can be served).
    Needs the serve extra: pip install 'is5net[serve]'.
    """
    parser.add_argument(
        "--checkpoint",
        metavar="PATH|NAME",
        help="refiner: DIS-SAM .pth or our .safetensors, or a name under IS5NET_HOME (dis-sam)",
    )
    parser.add_argument(
        "--refiner", choices=("none",), default=None, help="none: serve the stage-1 mask alone (no --checkpoint)"
    )
    stage1_arguments(parser, coarse_mask=False)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--token",
        default=None,
        metavar="T",
        help="require 'Authorization: Bearer T' on /api/ (default: $IS5NET_SERVE_TOKEN, else none)",
    )
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    parser.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages of ORIGIN (e.g. https://example.org) call the API; repeatable (default: off)",
    )
    limit_arguments(parser)
    runtime_arguments(parser)
    region_arguments(parser)  # the default region for requests that name none; the API's "region" overrides
    parser.add_argument("--no-ui", action="store_true", help="the API only, no page at /")
    parser.add_argument("-q", "--quiet", action="store_true", help="no access log")
    label_studio_arguments(parser)


def label_studio_arguments(parser: argparse.ArgumentParser) -> None:
    """Label Studio's model server (docs/label-studio.md): its URL, where task images may come from, the masks."""
    group = parser.add_argument_group(
        "Label Studio",
        "answer Label Studio as its ML backend at http://HOST:PORT/label-studio (the API key is read from "
        "$LABEL_STUDIO_API_KEY only, never from the command line)",
    )
    group.add_argument(
        "--label-studio", action="store_true", help="answer Label Studio's ML-backend protocol under /label-studio/"
    )
    group.add_argument(
        "--label-studio-url",
        default=None,
        metavar="URL",
        help="Label Studio's address: task images under /data/... are read from it (default: $LABEL_STUDIO_URL)",
    )
    group.add_argument(
        "--label-studio-root",
        default=None,
        metavar="DIR",
        help="read task images given as local paths (or Local Storage URLs) from inside DIR only (default: none)",
    )
    group.add_argument(
        "--label-studio-allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also read task images from http(s) URLs on HOST (repeatable; default: Label Studio's host only)",
    )
    group.add_argument(
        "--label-studio-threshold",
        default="0.5",
        metavar="T",
        help="binarise Label Studio's masks at T in [0, 1] or 'otsu' (default 0.5; as predict --threshold)",
    )


def label_studio_options(args: argparse.Namespace):
    """The checked ``LabelStudioOptions`` of ``--label-studio``, or None; its settings without it are refused."""
    given = [
        name
        for name, value in (
            ("--label-studio-url", args.label_studio_url),
            ("--label-studio-root", args.label_studio_root),
            ("--label-studio-allow-host", args.label_studio_allow_host),
            ("--label-studio-threshold", args.label_studio_threshold != "0.5"),
        )
        if value
    ]
    if not args.label_studio:
        if given:
            raise IS5NetError(f"{given[0]} is a setting of --label-studio: add --label-studio")
        return None
    import importlib.util

    if importlib.util.find_spec("label_studio_sdk") is None:
        raise IS5NetError("is5net serve --label-studio needs label-studio-sdk: pip install 'is5net[label-studio]'")
    from ..inference.outputs import parse_threshold
    from ..serve.label_studio import KEY_ENV, URL_ENV, LabelStudioOptions

    refiner = Path(args.checkpoint).name if args.checkpoint else "stage1-only"
    return LabelStudioOptions.checked(
        url=args.label_studio_url or os.environ.get(URL_ENV) or None,
        api_key=os.environ.get(KEY_ENV) or None,
        root=args.label_studio_root,
        allow_hosts=args.label_studio_allow_host,
        threshold=parse_threshold(args.label_studio_threshold, "--label-studio-threshold"),
        model_version=f"is5net-{__version__}/{refiner}/{args.stage1 or 'sam'}",
    )


def limit_arguments(parser: argparse.ArgumentParser) -> None:
    """What one request, and all of them together, may take: bytes, pixels, memory, time."""
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=25.0,
        metavar="MB",
        help="largest request body, refused while it streams in (413; default 25)",
    )
    parser.add_argument(
        "--max-uploads",
        type=positive_int,
        default=None,
        metavar="N",
        help="request bodies received at once, so at most N x --max-upload-mb on disk; more get 429 "
        "(default: twice --queue)",
    )
    parser.add_argument(
        "--upload-timeout",
        type=positive_float,
        default=120.0,
        metavar="S",
        help="seconds a request body may take to arrive; a slower one gets 408 and is closed (default 120)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=50_000_000,
        metavar="N",
        help="largest image in pixels (413; default 50000000)",
    )
    parser.add_argument(
        "--cache-mb",
        type=float,
        default=1024.0,
        metavar="MB",
        help="memory for cached image embeddings, least recently used dropped first (default 1024)",
    )
    parser.add_argument(
        "--queue",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests waiting or running at once; more get 429 with Retry-After (default 8)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="per-request limit in seconds, queueing included (503 after; default 120)",
    )


def check_bind(args: argparse.Namespace) -> Optional[str]:
    """Refuse a non-loopback ``--host`` without ``--token`` or ``--insecure``; the warning to print, if any.

    ``args.token`` becomes the token in force: ``--token``, else ``$IS5NET_SERVE_TOKEN``, else None.
    """
    from ..serve.access import TOKEN_ENV, bind_warning

    args.token = args.token or os.environ.get(TOKEN_ENV) or None
    return bind_warning(args.host, args.token, args.insecure)


def require_extra() -> None:
    """The serve extra's packages, or one line saying how to install them (not a traceback)."""
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise IS5NetError(f"is5net serve needs {', '.join(missing)}: pip install 'is5net[serve]'")


def build(args: argparse.Namespace):
    """``(app, engine, tmp_dir)`` for the parsed ``is5net serve`` arguments; nothing is listening yet."""
    require_extra()
    from ..inference.predictor import PredictorOptions
    from ..serve.access import is_loopback
    from ..serve.app import Options, create_app
    from ..serve.engine import Engine, Limits
    from ..serve.models import load_models

    warning = check_bind(args)
    label_studio = label_studio_options(args)  # checked before any model loads
    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        cache_bytes=int(args.cache_mb * 2**20),
        queue=args.queue,
        timeout_s=args.timeout,
        max_uploads=args.max_uploads or 2 * args.queue,
        upload_timeout_s=args.upload_timeout,
    )
    predictor = PredictorOptions.from_args(args, calibration=calibration_from_args(args))
    models = load_models(args.checkpoint, args.refiner, args.stage1, args.sam_checkpoint, args.sam_type, predictor)
    tmp_dir = Path(tempfile.mkdtemp(prefix="is5net-serve-"))
    engine = Engine(models, limits, tmp_dir)
    options = Options(
        token=args.token,
        cors=list(args.cors),
        ui=not args.no_ui,
        loopback_only=is_loopback(args.host),
        label_studio=label_studio,
    )
    app = create_app(engine, options)
    app.state.bind_warning = warning
    return app, engine, tmp_dir


def run(args: argparse.Namespace) -> int:
    from ..serve.app import serve_forever

    app, engine, tmp_dir = build(args)
    if app.state.bind_warning:
        log.warning("%s", app.state.bind_warning)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"
    models = engine.models
    print(
        f"is5net serve: {url}{'' if args.no_ui else ' (the page)'}, API docs at {url}docs; "
        f"stage 1: {models.stage1['detail']}; refiner: {models.refiner_info['detail']}; Ctrl-C stops",
        file=sys.stderr,
    )
    if models.refiner_info.get("note"):
        log.warning("%s", models.refiner_info["note"])
    ls = app.state.label_studio if hasattr(app.state, "label_studio") else None
    if ls is not None:
        key = "with" if ls.options.api_key else "WITHOUT"
        print(
            f"is5net serve: Label Studio's model URL is {url}label-studio (interactive); images from "
            f"{ls.options.url or 'no Label Studio URL'} {key} an API key",
            file=sys.stderr,
        )
    try:
        started = serve_forever(
            app,
            host=args.host,
            port=args.port,
            log_level="warning" if args.quiet else "info",
            access_log=not args.quiet,
            timeout_graceful_shutdown=5,
        )
        if not started:
            sys.exit(3)  # uvicorn's own exit status when it cannot start (a port in use), as uvicorn.run gives
        interrupts.stopped_on_purpose()  # Ctrl-C is how a server stops: uvicorn has shut it down cleanly
    except KeyboardInterrupt:
        interrupts.stopped_on_purpose()
    finally:
        engine.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return 0
