"""Image and mask IO: Pillow with EXIF orientation, documented conversions, atomic writes.

Conventions used across the package:
- an image is ``HxWx3`` ``uint8`` RGB, in the frame as displayed (EXIF orientation applied);
- a mask is ``HxW``; on disk an 8-bit grayscale PNG (0..255).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
import warnings
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .defaults import MAX_PIXELS_ENV
from .errors import IS5NetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

PathLike = Union[str, os.PathLike]

#: Images with more pixels than this are refused (a guard against decompression bombs: a small file that
#: decodes to gigabytes). Pillow's own default, 1024**3 // 4 // 3 (about 9459 x 9459): the size above which
#: Pillow starts warning. Raise it with the environment variable or ``predict --max-pixels``.
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def max_pixels(override: Optional[int] = None) -> Optional[int]:
    """The pixel limit the user set: ``override`` if given, else ``$IS5NET_MAX_PIXELS``; None if neither."""
    if override is not None:
        return int(override)
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise IS5NetError(f"{MAX_PIXELS_ENV}={text!r}: expected a whole number of pixels") from None
    if value < 1:
        raise IS5NetError(f"{MAX_PIXELS_ENV}={text!r}: expected a number of pixels >= 1")
    return value


def _too_many_pixels(path: Path, detail: str, limit: int) -> IS5NetError:
    return IS5NetError(
        f"{path}: refused, too many pixels ({detail}, the limit is {limit:,}: a guard against decompression "
        f"bombs); to read it anyway, raise the limit with {MAX_PIXELS_ENV}=N or predict --max-pixels N"
    )


def _open_checked(path: Path, limit: Optional[int] = None) -> Image.Image:
    """``Image.open`` (header only) under this package's pixel limit, with one clear error over it.

    Pillow warns (``DecompressionBombWarning``, which would leak into the user's terminal) above
    ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that. Here the warning is silenced and the size is
    checked against the user's limit (``limit``, else ``$IS5NET_MAX_PIXELS``), else Pillow's own threshold,
    so a program that lowered ``Image.MAX_IMAGE_PIXELS`` keeps its protection. When the user asked for a
    larger limit than Pillow's, Pillow's threshold is raised to it (only ever raised: lowering or restoring
    it would race with other threads that are decoding).
    """
    asked = max_pixels(limit)
    pillow = Image.MAX_IMAGE_PIXELS
    if asked is not None and pillow is not None and pillow < asked:
        Image.MAX_IMAGE_PIXELS = pillow = asked
    limit = asked if asked is not None else (pillow if pillow is not None else DEFAULT_MAX_PIXELS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        # Pillow refuses above twice its threshold, which is never below ``limit`` here.
        raise _too_many_pixels(path, f"over {2 * pillow:,} pixels", limit) from None
    width, height = img.size
    if width * height > limit:
        img.close()
        raise _too_many_pixels(path, f"{width}x{height} = {width * height:,} pixels", limit)
    return img


def to_rgb_uint8(image) -> np.ndarray:
    """Convert an image to ``HxWx3`` ``uint8`` RGB.

    Accepted: a PIL image (any mode), or a numpy array that is
    - ``HxW`` grayscale (replicated to 3 channels),
    - ``HxWx1``, ``HxWx3`` or ``HxWx4`` (alpha dropped: the colour under it is kept, as SAM does),
    - ``uint8`` as is, ``uint16`` scaled by 255/65535, bool as 0/255, float in ``[0, 1]`` scaled by 255
      (a float image whose maximum is above 1 is taken as 0..255).

    A PIL image is turned by its EXIF orientation first, as :func:`load_image` does, so boxes are in the
    frame as displayed whichever way the image arrives.
    """
    if isinstance(image, Image.Image):
        return pil_to_rgb_uint8(ImageOps.exif_transpose(image))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise IS5NetError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {tuple(arr.shape)}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        out = np.round(arr.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 1.0 if float(np.nanmax(arr, initial=0.0)) > 1.0 else 255.0
        out = np.round(np.clip(arr.astype(np.float32) * scale, 0.0, 255.0)).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        out = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise IS5NetError(f"unsupported image dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise IS5NetError("the image is empty (zero height or width)")
    return np.ascontiguousarray(out)


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _sixteen_bit(img: Image.Image) -> np.ndarray:
    """A 16/32-bit integer image as uint16 0..65535. Mode ``I`` (32-bit) holding only 0..255 is 8-bit data
    in a wide container (some TIFF writers): it is scaled up so that it keeps its 8-bit meaning."""
    arr = np.asarray(img)
    if img.mode == "I" and arr.max(initial=0) <= 255:
        return np.clip(arr, 0, 255).astype(np.uint16) * 257
    return np.clip(arr, 0, 65535).astype(np.uint16)


def pil_to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """PIL image of any mode to ``HxWx3`` uint8 RGB (16-bit scaled down, alpha dropped, palette expanded)."""
    if img.mode in SIXTEEN_BIT_MODES:
        return to_rgb_uint8(_sixteen_bit(img))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return to_rgb_uint8(arr / 255.0 if arr.max(initial=0) > 1.0 else arr)
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "PA", "LA") else img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def open_image(path: PathLike, exif: bool = True, max_pixels: Optional[int] = None) -> Image.Image:
    """Open and fully decode an image, EXIF orientation applied unless ``exif=False``; one clear error on any
    failure. ``max_pixels``: refuse larger images, checked before decoding (default: ``$IS5NET_MAX_PIXELS``,
    else Pillow's ``Image.MAX_IMAGE_PIXELS``, about 89 million)."""
    path = Path(path)
    if not path.exists():
        raise IS5NetError(f"{path}: no such file")
    if path.is_dir():
        raise IS5NetError(f"{path}: is a directory, expected an image file")
    try:
        with _open_checked(path, max_pixels) as img:
            img.load()
            if not exif:
                return img.copy()
            img = ImageOps.exif_transpose(img)
            return img.copy() if img is not None else img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise IS5NetError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def image_file_problem(path: PathLike) -> Optional[str]:
    """Why ``path`` is not an image file at all (missing, a directory, a format Pillow does not identify),
    read from its header only; None when it is one. Decoding may still fail later (a truncated file), and
    the pixel limit is :func:`open_image`'s to check: this is the cheap test a command runs on all of its
    inputs before any slow work."""
    path = Path(path)
    if not path.exists():
        return "no such image file"
    if not path.is_file():
        return "not a file, expected an image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path):
                pass
    except Image.DecompressionBombError:
        return None  # an image, only a large one: open_image gives the size error with the way out
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image ({exc.__class__.__name__}: {exc})"
    return None


def load_image(path: PathLike, match: Optional[tuple[int, int]] = None, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read an image file as ``HxWx3`` uint8 RGB in its displayed orientation (EXIF applied).

    ``match``: the ``(height, width)`` of the mask this image pairs with (a dataset's GT). When the
    displayed image has another size but the stored pixels have that one, the stored pixels are returned:
    the GT was drawn on them, by a tool that ignored the EXIF tag (as the DIS code's loaders do).
    ``max_pixels``: refuse larger images (default: as :func:`open_image`).
    """
    img = open_image(path, max_pixels=max_pixels)
    if match is not None and (img.height, img.width) != tuple(match):
        raw = open_image(path, exif=False, max_pixels=max_pixels)
        if (raw.height, raw.width) == tuple(match):
            img = raw
    return pil_to_rgb_uint8(img)


def stored_and_displayed_size(path: PathLike) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((width, height) as stored, (width, height) as displayed)``, from the header only."""
    with _open_checked(Path(path)) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (w, h), ((h, w) if orientation in (5, 6, 7, 8) else (w, h))


def load_mask(path: PathLike, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read a mask file as ``HxW`` uint8 0..255.

    Colour masks are converted to luminance, 16-bit ones scaled by 255/65535; with an alpha channel that
    varies (a cut-out), the alpha is the mask; a palette image with coloured entries on black is an index
    mask (every non-black entry = foreground). ``max_pixels`` as for :func:`load_image`.
    """
    img = open_image(path, max_pixels=max_pixels)
    if img.mode in SIXTEEN_BIT_MODES:
        arr = _sixteen_bit(img).astype(np.float32) * (255.0 / 65535.0)
        return np.round(arr).astype(np.uint8)
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if img.mode == "P":
        index = np.asarray(img, dtype=np.uint8)
        used = np.unique(index)
        colours = np.zeros((256, 3), np.int32)  # entries past the palette's end: black
        palette = np.asarray(img.getpalette() or [], dtype=np.int32).reshape(-1, 3)[:256]
        colours[: len(palette)] = palette
        black = ~colours.any(axis=1)
        grey = (colours[used, 0] == colours[used, 1]) & (colours[used, 1] == colours[used, 2])
        if not grey.all() and black[used].any():
            # An index mask (VOC/DAVIS style: objects in colours on black): foreground is every index whose
            # colour is not black. Its luminance would say nothing (VOC's dark red is 38 of 255).
            return (~black[index]).astype(np.uint8) * 255
    if img.mode in ("RGBA", "LA", "PA"):
        # A cut-out saved with alpha: the alpha channel is the mask. A constant alpha carries nothing (a
        # grey mask that an editor saved with an opaque alpha): then the grey levels are the mask.
        alpha = np.asarray(img.getchannel("A"), dtype=np.uint8)
        if alpha.size and alpha.min() != alpha.max():
            return alpha.copy()
        img = img.convert("RGBA").convert("RGB") if img.mode == "PA" else img
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


def mask_to_uint8(mask) -> np.ndarray:
    """A mask given as bool, 0/1, 0/255, uint16 or float [0, 1] -> ``HxW`` uint8 0..255.

    Floats are scaled and truncated, ``(x * 255).astype(uint8)``, as the DIS and DIS-SAM code save their
    maps, so a map saved here scores as the reference's would. uint16 is scaled by 255/65535 (as
    :func:`load_mask` reads 16-bit files). Integer maps whose maximum is 1 are 0/1 labels, hence x255.
    """
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise IS5NetError(f"expected an HxW mask, got shape {tuple(arr.shape)}")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        top = float(np.nanmax(arr, initial=0.0))
        arr = np.nan_to_num(arr, nan=0.0, posinf=top, neginf=0.0)  # a NaN pixel is background
        if top <= 1.0:
            return (np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    if arr.max(initial=0) <= 1:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return np.round(arr.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``, on error delete it.

    A reader never sees a half-written file, and an interrupted write leaves nothing behind. The file gets
    the permissions a plain ``open(path, "w")`` would give it: those of the file it replaces, or for a new
    file 0666 less the umask (``tempfile.mkstemp`` would make every output 0600, unreadable to the group).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp_beside(path)
    mode = stat.S_IMODE(os.stat(tmp_path).st_mode)
    try:
        yield tmp_path
        # A writer may replace the file it was given rather than write into it (safetensors' save_file does,
        # with a 0600 file of its own): the mode decided above is the one the result must have.
        if stat.S_IMODE(os.stat(tmp_path).st_mode) != mode:
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _create_temp_beside(path: Path) -> Path:
    """Create an empty, unique ``.<name>.<random>.tmp`` next to ``path`` with the mode ``open()`` would give.

    ``os.open(..., 0o666)`` lets the kernel apply the umask, as ``open()`` does, without reading the umask
    (``os.umask`` can only be read by setting it, which races with other threads creating files).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        try:
            existing = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            existing = None
        if existing is not None and stat.S_ISREG(existing.st_mode):
            try:
                os.chmod(tmp, stat.S_IMODE(existing.st_mode))  # open() on an existing file keeps its mode
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return tmp
    raise FileExistsError(f"{path.parent}: could not create a temporary file next to {path.name}")


def open_append(path: PathLike, binary: bool = False, readable: bool = False):
    """Open ``path`` to append to it (created 0666 less the umask), refusing a symbolic link.

    The project appends only to its own bookkeeping (the predict journal, a training run's log.csv, a partial
    download): a link there would send those lines into some other file, so it is an error, not followed.
    """
    access = os.O_RDWR if readable else os.O_WRONLY
    flags = access | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if Path(path).is_symlink():
            raise IS5NetError(
                f"{path} is a symbolic link; is5net appends its own records there and does not follow links: "
                "remove the link (or choose another folder)"
            ) from None
        raise exc
    mode = ("ab" if binary else "a") + ("+" if readable else "")
    return os.fdopen(fd, mode, **({} if binary else {"newline": ""}))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: PathLike, array: np.ndarray) -> None:
    """Write a uint8 ``HxW`` (grayscale) or ``HxWx3/4`` array as PNG, atomically."""
    atomic_write_bytes(path, encode_png(array))


def list_images(folder: PathLike) -> dict[str, Path]:
    """Map stem -> path for the image files directly in ``folder`` (any of IMAGE_EXTENSIONS, any case).

    Two files with the same stem (``a.jpg`` and ``a.png``) are an error: the pairing would be ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise IS5NetError(f"{folder}: no such directory")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            if p.stem in out:
                raise IS5NetError(f"{folder}: two images share the stem {p.stem!r} ({out[p.stem].name}, {p.name})")
            out[p.stem] = p
    return out
