"""Request bodies read as they stream in, under a byte limit: multipart forms and small JSON bodies.

FastAPI's ``UploadFile`` parses the whole body before the endpoint runs, so a 2 GB upload would be
received (and spooled) in full before it could be refused. Here the body is parsed chunk by chunk
(``python-multipart``'s push parser): file parts go to a temporary file in the server's own folder, hashed
(SHA-256) on the way, and the moment the byte count passes the limit the parts are deleted and a 413
answers. The rest of an over-limit body is read and thrown away (up to a cap) before answering, because an
HTTP/1.1 client that is still sending when the server closes sees a reset, not the 413.

Bodies are bounded in number and time too (:class:`Uploads`): at most ``--max-uploads`` are received at once
(429 past that), so the disk they hold is at most that many times ``--max-upload-mb``; each must arrive
within ``--upload-timeout`` seconds (408 after, and the connection closed), so a client that stalls
mid-body holds nothing for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from .errors import ApiError
from .stopping import Stopping

MAX_FIELD_BYTES = 64 * 1024  # a text field (a box, a threshold) is a few bytes; a 64 KiB one is a mistake
MAX_PARTS = 256
DRAIN_EXTRA = 100 * 2**20  # read and discard an over-limit body up to this much past the limit, then stop reading
# The JSON body of /api/images/{id}/segment holds boxes and a few options: 64 boxes are a few KiB. Its limit is
# fixed (the images, and so --max-upload-mb, go to the multipart routes).
MAX_JSON_BYTES = 1 << 20
JSON_LIMIT = "the JSON body limit of 1 MiB (fixed: it holds boxes only; --max-upload-mb is for images)"


@dataclass
class UploadedFile:
    """One file part, on disk in the server's temporary folder (deleted by :meth:`Form.close`)."""

    field: str
    filename: str
    path: Path
    size: int
    sha256: str


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[UploadedFile]] = field(default_factory=dict)
    release: Optional[Callable[[], None]] = None  # frees the form's upload slot (its files are on disk till close)

    def text(self, name: str) -> Optional[str]:
        values = self.fields.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise ApiError(422, f"field {name!r} was given {len(values)} times; give it once")
        return values[0]

    def file(self, name: str, required: bool = True) -> Optional[UploadedFile]:
        files = self.files.get(name, [])
        if len(files) > 1:
            raise ApiError(422, f"file {name!r} was given {len(files)} times; give it once")
        if not files:
            if required:
                raise ApiError(422, f"no {name!r} file in the form (multipart/form-data, field {name!r})")
            return None
        return files[0]

    def take(self, name: str) -> Optional[UploadedFile]:
        """Remove a file from the form and hand its temporary file to the caller (who deletes it)."""
        found = self.file(name, required=False)
        if found is not None:
            self.files.pop(name)
        return found

    def close(self) -> None:
        for files in self.files.values():
            for f in files:
                with contextlib.suppress(FileNotFoundError):
                    f.path.unlink()
        self.files.clear()
        release, self.release = self.release, None
        if release is not None:
            release()


def _declared_length(request: Request) -> Optional[int]:
    text = request.headers.get("content-length")
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f"Content-Length {text!r} is not a number") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is over the server's limit of {limit / 2**20:.3g} MiB (--max-upload-mb)",
        headers={"Connection": "close"},
    )


def _drain_cap(limit: int) -> int:
    return max(2 * limit, limit + DRAIN_EXTRA)


async def _drain(chunks, received: int, limit: int) -> None:
    """Read and discard what is left of an over-limit body (up to a cap), so the client can read the 413."""
    cap = _drain_cap(limit)
    with contextlib.suppress(ClientDisconnect):
        async for chunk in chunks:
            received += len(chunk)
            if received > cap:
                break


class Uploads:
    """The request bodies being received: at most ``max_uploads`` at once, each within ``timeout_s``.

    One event loop runs every request, so the count needs no lock. A multipart body holds its slot until
    its form is closed (its files are on disk till then), a JSON body while it is read.
    """

    def __init__(
        self, max_bytes: int, max_uploads: int, timeout_s: float, tmp_dir: Path, stopping: Optional[Stopping] = None
    ):
        self.max_bytes, self.max_uploads, self.timeout_s, self.tmp_dir = max_bytes, max_uploads, timeout_s, tmp_dir
        self.stopping = stopping or Stopping()
        self.active = 0

    async def slot(self, request: Optional[Request] = None) -> Callable[[], None]:
        """A slot for one body (call the result to free it), or 429 when ``max_uploads`` are being received.

        ``request``: the request whose body will be read (None: an image the server downloads itself).
        """
        if self.active >= self.max_uploads:
            busy = ApiError(
                429,
                f"busy: {self.active} uploads are being received (--max-uploads {self.max_uploads}); retry in 1 s",
                headers={"Retry-After": "1", "Connection": "close"},
            )
            # Read (and drop) the body first, as for a 413, so that the client reads the answer, not a reset.
            if request is not None:
                await self.within(_drain(request.stream().__aiter__(), 0, self.max_bytes))
            raise busy
        self.active += 1
        freed = False

        def release() -> None:
            nonlocal freed
            if not freed:
                freed, self.active = True, self.active - 1

        return release

    async def within(self, receiving) -> Any:
        """``receiving`` (a body being read) within the upload timeout (408) and the server's stop (503)."""
        try:
            return await asyncio.wait_for(self.stopping.race(receiving), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                408,
                f"the request body took longer than the server's limit of {self.timeout_s:g} s to arrive "
                "(--upload-timeout)",
                headers={"Connection": "close"},
            ) from None


async def read_form(
    request: Request, uploads: Uploads, file_fields: frozenset[str], text_fields: frozenset[str]
) -> Form:
    """Parse a ``multipart/form-data`` body of at most ``uploads.max_bytes`` bytes (else 413) into a :class:`Form`.

    Only ``file_fields`` may be files and only ``text_fields`` may be text; anything else is a 422. The
    caller owns the result and must :meth:`Form.close` it (which deletes the temporary files).
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "expected a multipart/form-data body (an 'image' file and form fields)")
    limit = uploads.max_bytes
    declared = _declared_length(request)
    if declared is not None and declared > _drain_cap(limit):
        raise _too_large(limit)  # refused before a byte of it is read

    builder = _FormBuilder(uploads.tmp_dir, file_fields, text_fields)
    builder.form.release = await uploads.slot(request)
    try:
        parser = _parser(params[b"boundary"], builder)
        await uploads.within(_parse(request, parser, builder, limit))
    except BaseException:
        builder.abort()
        raise
    return builder.form


def _parser(boundary: bytes, builder: "_FormBuilder") -> MultipartParser:
    try:
        return MultipartParser(boundary, builder.callbacks())
    except Exception as exc:  # a boundary python-multipart refuses (over 256 bytes)
        raise ApiError(422, f"malformed multipart body ({exc.__class__.__name__}: {exc})") from None


async def _parse(request: Request, parser: MultipartParser, builder: "_FormBuilder", limit: int) -> None:
    """Push the body through ``parser`` as it streams in; every failure is an :class:`ApiError`."""
    received, form = 0, builder.form
    chunks = request.stream().__aiter__()  # one iterator: a body can be streamed once
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                form.close()
                await _drain(chunks, received, limit)
                raise _too_large(limit)
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect:
        raise ApiError(400, "the client went away before the upload ended") from None
    except ApiError:
        raise
    except Exception as exc:  # python-multipart's own parse errors
        raise ApiError(422, f"malformed multipart body ({exc.__class__.__name__})") from None
    if builder.in_part:
        raise ApiError(422, "malformed multipart body (it ends inside a part: the upload was cut short)")


@dataclass
class _FilePart:
    entry: UploadedFile  # in the form already; its size and hash are set when the part ends
    handle: BinaryIO
    sha256: Any = field(default_factory=hashlib.sha256)
    size: int = 0


@dataclass
class _TextPart:
    name: str
    data: bytearray = field(default_factory=bytearray)


class _FormBuilder:
    """python-multipart's callbacks: the parts of one body, checked and stored as they arrive, into ``form``."""

    def __init__(self, tmp_dir: Path, file_fields: frozenset[str], text_fields: frozenset[str]):
        self.tmp_dir, self.file_fields, self.text_fields = tmp_dir, file_fields, text_fields
        self.form = Form()
        self._headers: dict[str, bytes] = {}
        self._field = self._value = b""
        self._part: Optional[_FilePart | _TextPart] = None
        self._open = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    @property
    def in_part(self) -> bool:
        """Whether a part has begun and not ended (a body cut short leaves one open)."""
        return self._open

    def abort(self) -> None:
        """Close the part being written, if any, and delete every file part."""
        if isinstance(self._part, _FilePart):
            self._part.handle.close()
        self.form.close()

    def _part_begin(self) -> None:
        self._headers, self._part, self._open = {}, None, True

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, disp = parse_options_header(self._headers.get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        form = self.form
        if sum(len(v) for v in form.fields.values()) + sum(len(v) for v in form.files.values()) >= MAX_PARTS:
            raise ApiError(422, f"more than {MAX_PARTS} form fields")
        if b"filename" in disp or name in self.file_fields:
            self._part = self._open_file(name, disp)
        else:
            if name not in self.text_fields:
                fields = ", ".join(sorted(self.text_fields | self.file_fields))
                raise ApiError(422, f"unknown field {name!r}; expected {fields}")
            self._part = _TextPart(name)

    def _open_file(self, name: str, disp: dict) -> _FilePart:
        if name not in self.file_fields:
            raise ApiError(422, f"unexpected file field {name!r}; files go in {', '.join(sorted(self.file_fields))}")
        fd, path = tempfile.mkstemp(prefix="upload-", dir=self.tmp_dir)
        # The client's file name is only ever shown in messages (never used as a path).
        filename = os.path.basename(disp.get(b"filename", b"").decode("utf-8", "replace")) or name
        entry = UploadedFile(name, filename, Path(path), 0, "")
        part = _FilePart(entry, os.fdopen(fd, "wb"))
        self.form.files.setdefault(name, []).append(entry)
        return part

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part, chunk = self._part, data[start:end]
        if isinstance(part, _FilePart):
            part.handle.write(chunk)
            part.sha256.update(chunk)
            part.size += len(chunk)
        else:
            part.data.extend(chunk)
            if len(part.data) > MAX_FIELD_BYTES:
                raise ApiError(422, f"field {part.name!r} is over {MAX_FIELD_BYTES // 1024} KiB")

    def _part_end(self) -> None:
        part, self._part, self._open = self._part, None, False
        if isinstance(part, _FilePart):
            part.handle.close()
            part.entry.size, part.entry.sha256 = part.size, part.sha256.hexdigest()
        elif part is not None:
            try:
                self.form.fields.setdefault(part.name, []).append(bytes(part.data).decode("utf-8"))
            except UnicodeDecodeError:
                raise ApiError(422, f"field {part.name!r} is not UTF-8 text") from None


async def read_json(request: Request, uploads: Uploads, limit: Optional[int] = None) -> Any:
    """A JSON body of at most :data:`MAX_JSON_BYTES` (else 413); 415 if it is not ``application/json``.

    ``limit``: another bound in bytes, whose refusal names ``--max-upload-mb`` (Label Studio's requests carry
    the task with its annotations, which can outgrow a list of boxes).
    """
    ctype, _ = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"application/json":
        raise ApiError(415, "expected an application/json body")
    bound = MAX_JSON_BYTES if limit is None else limit
    too_large = _json_too_large if limit is None else (lambda: _too_large(bound))
    declared = _declared_length(request)
    if declared is not None and declared > bound:
        raise too_large()
    release = await uploads.slot(request)
    try:
        body = await uploads.within(_read_small(request, bound, too_large))
    finally:
        release()
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(422, "the body is not valid JSON here: it is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            422, f"the body is not valid JSON ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from None


def _json_too_large() -> ApiError:
    return ApiError(413, f"the request body is over {JSON_LIMIT}", headers={"Connection": "close"})


async def _read_small(request: Request, limit: int, too_large: Callable[[], ApiError]) -> bytes:
    body = bytearray()
    chunks = request.stream().__aiter__()
    try:
        async for chunk in chunks:
            body.extend(chunk)
            if len(body) > limit:
                await _drain(chunks, len(body), limit)
                raise too_large()
    except ClientDisconnect:
        raise ApiError(400, "the client went away before the body ended") from None
    return bytes(body)
