"""Label Studio's ML-backend protocol over the server's engine: ``is5net serve --label-studio`` (docs/label-studio.md).

Label Studio (1.23) calls a model server at the URL its user connects, here ``http://HOST:PORT/label-studio``
(it appends the endpoint's name):

- ``GET /health``: ``{"status": "UP", ...}``. Label Studio waits 1 s for it, so it never queues behind a job.
- ``POST /setup`` ``{project, schema, hostname, access_token, extra_params}`` -> ``{"model_version"}``: the
  labelling config (``schema``) is checked here, so a project that cannot work is told when it connects. The
  ``access_token`` Label Studio sends along is never used: images are read with ``LABEL_STUDIO_API_KEY``.
- ``POST /predict`` ``{tasks, project, label_config, params: {context}}`` -> ``{"results": [prediction]}``. With
  ``context.result`` (what the annotator drew with a smart tool: a rectangle, or keypoints), one prediction of
  ``brushlabels`` results, one per rectangle, in Label Studio's RLE. Without a context (pre-annotating a batch)
  nothing is guessed: ``{"results": []}``, which Label Studio stores as no prediction.
- ``POST /webhook``: Label Studio sends every project event to each model server; is5net learns nothing from
  them, so they are acknowledged unread.

Refusals are the API's (``{"error": "<one line>"}``, a 4xx, never a 500 for bad input; :mod:`.errors`), and
each is logged as one line, because Label Studio passes the annotator only the status line of a refusal.
Images follow :func:`image_source`; their size, pixels, the queue and the timeouts are the API's limits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import parse_qs, urlsplit

import numpy as np
from fastapi import APIRouter, Request

from .. import __version__
from ..errors import IS5NetError
from ..inference.outputs import mask_uint8
from .access import LABEL_STUDIO_PREFIX
from .engine import MAX_BOXES, Engine
from .errors import ApiError
from .routes import EngineDep, UploadsDep
from .upload import Uploads, read_json

log = logging.getLogger("is5net.serve")

URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
# Paths that Label Studio itself serves; a task value starting with one is read from LABEL_STUDIO_URL.
LS_PATHS = ("/data/", "/storage-data/")
MAX_REGIONS = 256  # drawn regions in one context: rectangles and keypoints of one smart tool
REMEMBERED = 1024  # tasks whose last rectangle is kept for the keypoints that follow it
Threshold = Union[float, str]


# ------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class LabelStudioOptions:
    """Where task images may come from, and how masks are answered (checked by :meth:`checked`).

    url: Label Studio's address (``LABEL_STUDIO_URL``): relative task URLs (``/data/upload/...``) and URLs under
        it are read from it, with ``api_key``. root: the folder local paths must lie in. allow_hosts: other
        hosts whose ``http(s)`` URLs may be read (without the key). threshold: the masks' binarisation.
    """

    url: Optional[str] = None
    api_key: Optional[str] = field(default=None, repr=False)  # never shown: not in repr, logs or messages
    root: Optional[Path] = None
    allow_hosts: tuple[str, ...] = ()
    threshold: Threshold = 0.5
    model_version: str = f"is5net-{__version__}"

    @classmethod
    def checked(cls, url, api_key, root, allow_hosts, threshold, model_version) -> "LabelStudioOptions":
        """The options from the command line, each refused with one line naming it (:class:`IS5NetError`)."""
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise IS5NetError(f"--label-studio-url {url!r}: expected http(s)://host[:port][/path]")
        if root is not None:
            root = Path(root).expanduser()
            if not root.is_dir():
                raise IS5NetError(f"--label-studio-root {root}: not a folder")
            root = root.resolve()
        hosts = tuple(_checked_host(h) for h in allow_hosts)
        if not (threshold == "otsu" or isinstance(threshold, float) and 0.0 <= threshold <= 1.0):
            raise IS5NetError(f"--label-studio-threshold {threshold!r}: expected a number in [0, 1] or 'otsu'")
        return cls(url.rstrip("/") if url else None, api_key or None, root, hosts, threshold, model_version)


def _checked_host(text: str) -> str:
    """``HOST`` or ``HOST:PORT`` as :func:`_host_allowed` compares it (lower case, IPv6 without brackets)."""
    name = str(text).strip().lower()
    parts = urlsplit(f"//{name}")
    try:
        port = parts.port
    except ValueError:
        port, parts = None, None
    if not name or parts is None or not parts.hostname or parts.path or "@" in name:
        raise IS5NetError(
            f"--label-studio-allow-host {text!r}: expected a host name, optionally :port (no scheme, no path)"
        )
    return f"{parts.hostname}:{port}" if port else parts.hostname


# ----------------------------------------------------------------------------------- where images come from
@dataclass(frozen=True)
class ImageSource:
    """A task's image: a file under the root (``kind="file"``) or a URL (``"http"``, ``with_key``: Label Studio's)."""

    kind: str
    location: str
    with_key: bool = False


def _refused(value: str, why: str) -> ApiError:
    return ApiError(422, f"task image {value[:200]!r}: {why}")


def image_source(value: Any, options: LabelStudioOptions) -> ImageSource:
    """Where a task's image may be read from, by the rule of docs/label-studio.md ("Where images come from").

    - ``/data/...`` or ``/storage-data/...`` (Label Studio's own paths; ``upload/...`` as its exports write it):
      from ``options.url``, with the API key; ``/data/local-files/?d=REL`` is ``root/REL`` when a root is given.
    - ``http(s)://`` under ``options.url``: from there, with the key; on a host of ``allow_hosts``: without it.
    - a path: only inside ``options.root`` (resolved: no ``..`` or symlink leads out of it).
    Anything else (``file:``, ``s3:``, ``data:``, another host) is refused (422, naming the value).
    """
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, f"task image {json.dumps(value)[:80]}: expected a URL or a path (a string)")
    if value.startswith("upload/"):
        value = "/data/" + value
    if value.startswith("/data/local-files") and options.root is not None:
        relative = (parse_qs(urlsplit(value).query).get("d") or [""])[-1]
        if not relative:
            raise _refused(value, "a local-files URL without ?d=<path>")
        return ImageSource("file", str(local_file(relative.lstrip("/"), options.root, value)))
    if value.startswith(LS_PATHS):
        if not options.url:
            raise _refused(
                value, f"a Label Studio path, but no Label Studio URL was given (--label-studio-url or ${URL_ENV})"
            )
        return ImageSource("http", options.url + value, with_key=True)
    parts = urlsplit(value)
    if parts.scheme in ("http", "https"):
        if _under(value, options.url):
            return ImageSource("http", value, with_key=True)
        if _host_allowed(parts, options.allow_hosts):
            return ImageSource("http", value)
        raise _refused(
            value,
            f"host {parts.hostname} is not Label Studio's ({options.url or 'no --label-studio-url'}); "
            "allow it by name with --label-studio-allow-host",
        )
    if parts.scheme and len(parts.scheme) > 1:  # file:, s3:, gs:, data:, ... (one letter: a Windows drive)
        raise _refused(
            value, f"{parts.scheme}: URLs are not read; give a Label Studio URL, http(s) or a path under the root"
        )
    if options.root is None:
        raise _refused(
            value, "a local path, but no --label-studio-root was given (local paths are read only inside it)"
        )
    return ImageSource("file", str(local_file(value, options.root, value)))


def local_file(path: str, root: Path, shown: str) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved, if it lies inside ``root`` after every ``..`` and
    symlink is followed; else a 422 naming ``shown``."""
    real_root = root.resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else real_root / candidate).resolve()
    if not resolved.is_relative_to(real_root):
        raise _refused(shown, "outside the folder given by --label-studio-root")
    if not resolved.is_file():
        raise _refused(shown, "no such file under --label-studio-root")
    return resolved


def _origin(parts) -> tuple[str, str, int]:
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def _under(url: str, base: Optional[str]) -> bool:
    if not base:
        return False
    u, b = urlsplit(url), urlsplit(base)
    base_path = b.path.rstrip("/") + "/"
    return _origin(u) == _origin(b) and (u.path + "/").startswith(base_path)


def _host_allowed(parts, allowed: tuple[str, ...]) -> bool:
    host = (parts.hostname or "").lower()
    return host in allowed or f"{host}:{_origin(parts)[2]}" in allowed


# ------------------------------------------------------------------------------------------ the API key
def _jwt_claims(token: str) -> Optional[dict]:
    """The claims of a JWT, unverified (Label Studio verifies it), or None for a legacy token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


class LabelStudioKey:
    """The ``Authorization`` header for Label Studio, from ``LABEL_STUDIO_API_KEY``.

    A legacy token goes as ``Token KEY``. A personal access token (Label Studio 1.23's default) is a JWT
    *refresh* token: it is exchanged at ``/api/token/refresh/`` for a short-lived access token, sent as
    ``Bearer``, and exchanged again shortly before that expires (as label-studio-sdk does).
    """

    def __init__(self, api_key: Optional[str], base_url: Optional[str]):
        self._key, self._base = api_key, base_url
        self._access: Optional[str] = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def headers(self, client) -> dict[str, str]:
        if not self._key:
            return {}
        claims = _jwt_claims(self._key)
        if claims is None:
            return {"Authorization": f"Token {self._key}"}
        if claims.get("token_type") != "refresh":
            return {"Authorization": f"Bearer {self._key}"}
        async with self._lock:
            if self._access is None or time.time() > self._expires - 30:
                await self._exchange(client)
        return {"Authorization": f"Bearer {self._access}"}

    async def _exchange(self, client) -> None:
        import httpx

        url = f"{self._base}/api/token/refresh/"
        try:
            r = await client.post(url, json={"refresh": self._key})
        except httpx.HTTPError as exc:
            raise ApiError(502, f"Label Studio at {self._base} did not answer ({exc.__class__.__name__})") from None
        try:
            access = r.json().get("access") if r.status_code == 200 else None
        except (ValueError, AttributeError):
            access = None
        if not isinstance(access, str):
            raise ApiError(
                502,
                f"Label Studio refused ${KEY_ENV} ({r.status_code} from /api/token/refresh/): give a valid access token",
            )
        self._access = access
        self._expires = float((_jwt_claims(access) or {}).get("exp", time.time() + 60))


# ------------------------------------------------------------------------------------------ reading images
@dataclass
class Fetched:
    """An image ready for :meth:`Engine.load`: its file, the SHA-256 of its bytes, and its name in messages."""

    path: Path
    sha256: str
    name: str
    temporary: bool = False

    def discard(self) -> None:
        if self.temporary:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


async def fetch_image(
    source: ImageSource, shown: str, engine: Engine, uploads: Uploads, key: LabelStudioKey
) -> Fetched:
    """The image of ``source``: a local file hashed as it is, a URL downloaded into the server's temporary folder
    under the API's limits (bytes: ``--max-upload-mb``; at once: ``--max-uploads``; time: ``--upload-timeout``)."""
    limit = engine.limits.max_upload_bytes
    if source.kind == "file":
        path = Path(source.location)
        if path.stat().st_size > limit:
            raise ApiError(413, f"{shown}: over the server's limit of {limit / 2**20:.3g} MiB (--max-upload-mb)")
        return Fetched(path, await asyncio.to_thread(_sha256_of, path), path.name)
    release = await uploads.slot()  # counted as a body being received
    try:
        return await uploads.within(_download(source, shown, engine, key))
    except ApiError as exc:
        if exc.status == 408:  # the download, not a client's body, took too long
            raise ApiError(504, f"{shown}: not received within {uploads.timeout_s:g} s (--upload-timeout)") from None
        raise
    finally:
        release()


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _download(source: ImageSource, shown: str, engine: Engine, key: LabelStudioKey) -> Fetched:
    import httpx

    limit = engine.limits.max_upload_bytes
    fd, tmp = tempfile.mkstemp(prefix="label-studio-", dir=engine.tmp_dir)
    fetched = Fetched(Path(tmp), "", Path(urlsplit(source.location).path).name or "image", temporary=True)
    digest, size = hashlib.sha256(), 0
    try:
        # Redirects are not followed: the rule of image_source holds for the URL that is read.
        async with httpx.AsyncClient(follow_redirects=False, timeout=engine.limits.timeout_s) as client:
            headers = await key.headers(client) if source.with_key else {}
            async with client.stream("GET", source.location, headers=headers) as r:
                _check_answer(r, shown, source, limit)
                with os.fdopen(fd, "wb") as out:
                    fd = -1
                    async for chunk in r.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise ApiError(
                                413, f"{shown}: over the server's limit of {limit / 2**20:.3g} MiB (--max-upload-mb)"
                            )
                        out.write(chunk)
                        digest.update(chunk)
    except httpx.HTTPError as exc:
        fetched.discard()
        raise ApiError(502, f"{shown}: could not be read ({exc.__class__.__name__})") from None
    except BaseException:
        fetched.discard()
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    fetched.sha256 = digest.hexdigest()
    return fetched


def _check_answer(r, shown: str, source: ImageSource, limit: int) -> None:
    if r.status_code in (401, 403) and source.with_key:
        raise ApiError(502, f"{shown}: Label Studio answered {r.status_code}: set ${KEY_ENV} to a valid key")
    if r.status_code != 200:
        raise ApiError(502, f"{shown}: the image's server answered {r.status_code}, not the image")
    declared = r.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"{shown}: over the server's limit of {limit / 2**20:.3g} MiB (--max-upload-mb)")


# ------------------------------------------------------------------------------------------ labelling config
@dataclass(frozen=True)
class BrushTag:
    """A ``BrushLabels`` tag: its ``name`` (results' ``from_name``), the image it draws on, its label values."""

    name: str
    to_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabelConfig:
    images: dict[str, str]  # Image tag name -> the task data key of its value ("$image" -> "image")
    brushes: tuple[BrushTag, ...]

    def brush_for(self, to_name: str, label: Optional[str]) -> tuple[BrushTag, str]:
        """The BrushLabels tag on image ``to_name`` with label ``label`` (the one label, if None), or a 422."""
        tags = [b for b in self.brushes if b.to_name == to_name]
        if not tags:
            raise ApiError(
                422, f"the labelling config has no BrushLabels with toName={to_name!r}: is5net answers brush masks"
            )
        if label is None:
            if len(tags) == 1 and len(tags[0].labels) == 1:
                return tags[0], tags[0].labels[0]
            raise ApiError(422, "the drawn region has no label: choose one of the labels before drawing")
        for tag in tags:
            if label in tag.labels:
                return tag, label
        known = ", ".join(sorted({lab for t in tags for lab in t.labels}))
        raise ApiError(
            422, f"label {label!r} is not a label of the BrushLabels on {to_name!r} (its labels: {known}); add it there"
        )


def parse_label_config(text: Any) -> LabelConfig:
    """The Image and BrushLabels tags of a labelling config (XML), or a 422 saying what is missing."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError(422, "no labelling config (label_config) in the request")
    try:
        tree = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ApiError(422, f"the labelling config is not valid XML ({exc})") from None
    images, brushes = {}, []
    for tag in tree.iter():
        kind = str(tag.tag).lower()
        if kind == "image" and tag.get("name") and str(tag.get("value", "")).startswith("$"):
            images[tag.get("name")] = tag.get("value")[1:]
        elif kind == "brushlabels" and tag.get("name"):
            values = tuple(
                lab.get("value") for lab in tag.iter() if str(lab.tag).lower() == "label" and lab.get("value")
            )
            for target in str(tag.get("toName", "")).split(","):
                brushes.append(BrushTag(tag.get("name"), target.strip(), values))
    brushes = [b for b in brushes if b.to_name in images]
    if not brushes:
        raise ApiError(
            422,
            "the labelling config needs an <Image> and a <BrushLabels> on it (is5net answers brush masks); "
            "paste the config of docs/label-studio.md",
        )
    return LabelConfig(images, tuple(brushes))


# ----------------------------------------------------------------------------------------- what was drawn
@dataclass(frozen=True)
class Rect:
    """A drawn rectangle in percent of the image (Label Studio's units); ``rotation`` in degrees, clockwise."""

    x: float
    y: float
    width: float
    height: float
    rotation: float
    label: Optional[str]
    to_name: str

    def box(self, w: int, h: int) -> list[float]:
        """``[x0, y0, x1, y1]`` in pixels of a ``w x h`` image: the rectangle, or the bounds of a rotated one."""
        x0, y0, rw, rh = self.x * w / 100, self.y * h / 100, self.width * w / 100, self.height * h / 100
        if self.rotation % 360 == 0:
            return [x0, y0, x0 + rw, y0 + rh]
        a = math.radians(self.rotation)  # Label Studio turns the rectangle about its first corner
        corners = [(dx * math.cos(a) - dy * math.sin(a), dx * math.sin(a) + dy * math.cos(a)) for dx, dy in
                   ((0, 0), (rw, 0), (rw, rh), (0, rh))]  # fmt: skip
        xs, ys = [x0 + c[0] for c in corners], [y0 + c[1] for c in corners]
        return [min(xs), min(ys), max(xs), max(ys)]


@dataclass(frozen=True)
class Click:
    x: float  # percent of the image
    y: float
    positive: bool  # Label Studio's is_positive: a keypoint placed with Alt held is a negative one
    label: Optional[str]
    to_name: str


@dataclass
class Drawn:
    rects: list[Rect]
    clicks: list[Click]
    size: Optional[tuple[int, int]]  # (original_width, original_height) as Label Studio measured the image


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(422, f"context: {where} {json.dumps(value)[:40]}: expected a finite number")
    return float(value)


def _region_label(item: dict, kind: str) -> Optional[str]:
    value = item["value"]
    labels = value.get(kind) or value.get("labels") or []  # a smart tool's region carries "labels"
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise ApiError(422, f"context: {kind} {json.dumps(labels)[:60]}: expected a list of label names")
    return labels[0] if labels else None


def read_context(context: Any) -> Optional[Drawn]:
    """The rectangles and keypoints of an interactive request's context; None when there is none (a batch)."""
    if context is None or context == {} or (isinstance(context, dict) and not context.get("result")):
        return None
    if not isinstance(context, dict) or not isinstance(context.get("result"), list):
        raise ApiError(422, 'context: expected {"result": [regions]}')
    items = context["result"]
    if len(items) > MAX_REGIONS:
        raise ApiError(422, f"context: {len(items)} regions, at most {MAX_REGIONS}")
    drawn = Drawn([], [], None)
    for k, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise ApiError(422, f"context: region {k} is not an object with a value")
        kind, to_name = item.get("type"), str(item.get("to_name", ""))
        if kind == "rectanglelabels":
            drawn.rects.append(_rect(item, to_name))
        elif kind == "keypointlabels":
            drawn.clicks.append(_click(item, to_name))
        else:
            continue  # other tools' regions carry no prompt for is5net
        if "original_width" in item or "original_height" in item:
            size = (
                _number(item.get("original_width"), "original_width"),
                _number(item.get("original_height"), "original_height"),
            )
            drawn.size = (int(size[0]), int(size[1]))
    return drawn


def _rect(item: dict, to_name: str) -> Rect:
    v = item["value"]
    x, y, w, h = (_number(v.get(k), f"rectangle {k}") for k in ("x", "y", "width", "height"))
    rotation = _number(v.get("rotation", 0), "rectangle rotation")
    rect = Rect(x, y, w, h, rotation, _region_label(item, "rectanglelabels"), to_name)
    if w <= 0 or h <= 0:
        raise ApiError(422, f"context: the rectangle has no area (width {w:g}%, height {h:g}%)")
    x0, y0, x1, y1 = rect.box(100, 100)  # in percent
    if x1 <= 0 or y1 <= 0 or x0 >= 100 or y0 >= 100:
        raise ApiError(422, f"context: the rectangle (x {x:g}%, y {y:g}%, {w:g}% x {h:g}%) is outside the image")
    return rect


def _click(item: dict, to_name: str) -> Click:
    v = item["value"]
    x, y = _number(v.get("x"), "keypoint x"), _number(v.get("y"), "keypoint y")
    if not (0 <= x <= 100 and 0 <= y <= 100):
        raise ApiError(422, f"context: the keypoint at ({x:g}%, {y:g}%) is outside the image")
    positive = item.get("is_positive", True)
    if not isinstance(positive, bool):
        raise ApiError(422, f"context: is_positive {json.dumps(positive)[:20]}: expected true or false")
    return Click(x, y, positive, _region_label(item, "keypointlabels"), to_name)


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    """What to segment: one mask per rectangle (the clicks go with the last one), on image ``to_name``."""

    to_name: str
    rects: list[Rect]
    labels: list[tuple[BrushTag, str]]  # per rectangle: the BrushLabels tag and label its mask gets
    clicks: list[Click]


class RectMemory:
    """The last rectangle drawn on each task's image (a bounded LRU). Label Studio sends the regions of one
    smart tool at a time, so keypoints arrive without the rectangle they correct: this is that rectangle."""

    def __init__(self, size: int = REMEMBERED):
        self._rects: OrderedDict[tuple, Rect] = OrderedDict()
        self._size = size

    def put(self, key: tuple, rect: Rect) -> None:
        self._rects[key] = rect
        self._rects.move_to_end(key)
        while len(self._rects) > self._size:
            self._rects.popitem(last=False)

    def get(self, key: tuple) -> Optional[Rect]:
        return self._rects.get(key)


def make_plan(drawn: Drawn, config: LabelConfig, memory: RectMemory, task_key: tuple) -> Plan:
    """The rectangles (else the task's remembered one, for keypoints alone) with their brush labels, or a 422."""
    names = {r.to_name for r in drawn.rects} | {c.to_name for c in drawn.clicks}
    if not names:
        raise ApiError(422, "context: no rectangle: draw a rectangle (RectangleLabels) around the object first")
    if len(names) > 1:
        raise ApiError(422, f"context: regions on several images ({', '.join(sorted(names))}); draw on one")
    to_name = names.pop()
    if to_name not in config.images:
        raise ApiError(422, f"context: to_name {to_name!r} is not an <Image> of the labelling config")
    rects = list(drawn.rects)
    if len(rects) > MAX_BOXES:
        raise ApiError(422, f"context: {len(rects)} rectangles, at most {MAX_BOXES}")
    if rects:
        memory.put((*task_key, to_name), rects[-1])
        labels = [config.brush_for(to_name, r.label) for r in rects]
    else:
        remembered = memory.get((*task_key, to_name))
        if remembered is None:
            raise ApiError(
                422, "context: keypoints without a rectangle: draw a rectangle around the object first, then click"
            )
        rects = [remembered]
        labels = [config.brush_for(to_name, drawn.clicks[-1].label or remembered.label)]
    return Plan(to_name, rects, labels, list(drawn.clicks))


# ---------------------------------------------------------------------------------------- the answer
def brush_result(mask: np.ndarray, tag: BrushTag, label: str, score: float) -> dict:
    """One ``brushlabels`` result: ``mask`` (``HxW`` uint8, 0/255) in Label Studio's RLE (its converter's own
    encoder, ``label_studio_sdk.converter.brush``), with the label, at the image's size."""
    from label_studio_sdk.converter import brush

    h, w = mask.shape
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": tag.name,
        "to_name": tag.to_name,
        "type": "brushlabels",
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": brush.mask2rle(mask), "brushlabels": [label]},
        "score": score,
        "readonly": False,
    }


def mask_score(soft: np.ndarray, mask: np.ndarray) -> float:
    """How sure the refiner is of the mask: the mean of its soft map over the kept pixels (0 for an empty mask)."""
    kept = mask > 0
    return round(float(soft[kept].mean()), 4) if kept.any() else 0.0


def segment_job(
    engine: Engine, image: Fetched, plan: Plan, size: Optional[tuple[int, int]], threshold: Threshold
) -> list[dict]:
    """In the engine's worker: the image (decoded and embedded once, then from the cache), the masks, the results.

    ``size``: the image's ``(width, height)`` as Label Studio measured it, checked against the decoded file.
    """
    entry = engine.load(image.path, image.sha256, image.name)["entry"]
    w, h = entry.width, entry.height
    if size is not None and size != (w, h):
        raise ApiError(
            422,
            f"Label Studio shows the image as {size[0]}x{size[1]} but its file is {w}x{h}: "
            "is the task's image URL the image being labelled?",
        )
    boxes = [r.box(w, h) for r in plan.rects]
    clicks = {}
    if plan.clicks:
        # The clicks refine the last rectangle's mask (the one they were placed on).
        points = [[c.x * w / 100, c.y * h / 100] for c in plan.clicks]
        labels = [int(c.positive) for c in plan.clicks]
        none = [None] * (len(boxes) - 1)
        clicks = {"points": [*none, points], "point_labels": [*none, labels]}
    try:
        preds = entry.predictor.predict_batch(boxes, None, None, **clicks)
    except IS5NetError as exc:
        raise ApiError(422, str(exc)) from None
    results = []
    for pred, (tag, label) in zip(preds, plan.labels):
        mask = mask_uint8(pred.mask, threshold)  # exactly what `is5net predict --threshold` saves
        results.append(brush_result(mask, tag, label, mask_score(pred.mask, mask)))
    return results


# ------------------------------------------------------------------------------------------------ routes
@dataclass
class LabelStudioState:
    options: LabelStudioOptions
    key: LabelStudioKey
    memory: RectMemory = field(default_factory=RectMemory)


router = APIRouter(prefix=LABEL_STUDIO_PREFIX, tags=["Label Studio"])


def _state(request: Request) -> LabelStudioState:
    return request.app.state.label_studio


def _logged(exc: ApiError, where: str) -> ApiError:
    # Label Studio shows only "422 Client Error ..." for a refusal: the reason is in the server's log.
    log.warning("label studio %s: %s (%d)", where, exc.message, exc.status)
    return exc


@router.get("/health", summary="Label Studio's health check")
@router.get("/", include_in_schema=False)
async def ls_health(request: Request) -> dict:
    return {"status": "UP", "model_class": "is5net", "model_version": _state(request).options.model_version}


@router.post("/setup", summary="Label Studio connects a project: its labelling config is checked")
async def ls_setup(request: Request, uploads: UploadsDep) -> dict:
    try:
        body = await read_json(request, uploads)
        if not isinstance(body, dict):
            raise ApiError(422, "expected a JSON object {project, schema, ...}")
        parse_label_config(body.get("schema"))
    except ApiError as exc:
        raise _logged(exc, "setup") from None
    return {"model_version": _state(request).options.model_version}


@router.post(
    "/webhook", summary="Label Studio's project events: acknowledged, unread (is5net does not train from them)"
)
async def ls_webhook() -> dict:
    return {"status": "ok", "note": "is5net does not learn from Label Studio events"}


@router.get("/versions", summary="the model versions this server answers with")
async def ls_versions(request: Request) -> dict:
    return {"versions": [_state(request).options.model_version], "message": ""}


@router.post("/predict", summary="masks for what the annotator drew (brushlabels, Label Studio's RLE)")
async def ls_predict(request: Request, engine: EngineDep, uploads: UploadsDep) -> dict:
    state = _state(request)
    try:
        body = await read_json(request, uploads, limit=engine.limits.max_upload_bytes)
        task, config, drawn = _read_predict(body)
        if drawn is None:
            return {"results": []}  # pre-annotation of a batch: without a prompt, nothing to guess
        plan = make_plan(drawn, config, state.memory, (str(body.get("project")), task.get("id")))
        value = _task_image(task, config.images[plan.to_name])
        source = image_source(value, state.options)
        image = await fetch_image(source, f"task image {value[:120]!r}", engine, uploads, state.key)
        try:
            results = await engine.run(segment_job, engine, image, plan, drawn.size, state.options.threshold)
        finally:
            image.discard()
    except ApiError as exc:
        raise _logged(exc, "predict") from None
    score = round(sum(r["score"] for r in results) / len(results), 4)
    return {"results": [{"result": results, "score": score, "model_version": state.options.model_version}]}


def _read_predict(body: Any) -> tuple[dict, LabelConfig, Optional[Drawn]]:
    """The task, the labelling config and the drawn prompt of a ``/predict`` body (each refused by name)."""
    if not isinstance(body, dict):
        raise ApiError(422, "expected a JSON object {tasks, label_config, params}")
    tasks, params = body.get("tasks"), body.get("params") or {}
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
        raise ApiError(422, "tasks: expected a list of task objects")
    if not isinstance(params, dict):
        raise ApiError(422, "params: expected an object")
    drawn = read_context(params.get("context"))
    if drawn is None:
        return tasks[0], None, None  # type: ignore[return-value]
    if len(tasks) != 1:
        raise ApiError(422, f"an interactive request is for one task; got {len(tasks)}")
    return tasks[0], parse_label_config(body.get("label_config")), drawn


def _task_image(task: dict, key: str) -> Any:
    data = task.get("data")
    if not isinstance(data, dict) or key not in data:
        raise ApiError(422, f"the task has no data.{key} (the value of the labelling config's <Image>)")
    return data[key]
