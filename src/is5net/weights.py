"""The official weight files: found by name under ``IS5NET_HOME``, verified, downloaded only on request.

``--checkpoint dis-sam`` or ``--sam-checkpoint vit_l`` look for the official file names under
``IS5NET_HOME`` (default ``~/.is5net``); any other value is taken as a path. Nothing is downloaded except
by :func:`download` (``is5net weights download NAME``), which resumes a partial file with an HTTP Range
request, checks the result and only then moves it into place (a rename in the same folder), so a file
under its final name is always whole and verified.

What each file is checked against, and where that comes from (never a guess; unknown stays None):

- SAM (``sam_vit_{b,l,h}_*.pth``): the publisher's file name ends in the first six hex digits of the file's
  **MD5** (e.g. ``sam_vit_h_4b8939`` <- ``4b8939a8...``); the full SHA-256 and the size in bytes are the
  values many independent users report for those URLs (they agree with one another and with the name).
- IS-Net (``isnet.pth``, ``isnet-general-use.pth``) and DIS-SAM: published on Google Drive (and Baidu Pan)
  with no size or checksum; they are found by name and checked to be readable state dicts, no more.
- HQ-SAM (``sam_hq_vit_{tiny,b,l,h}.pth``, on the authors' Hugging Face repository) and SAM 2.1
  (``sam2.1_hiera_{tiny,small,base_plus,large}.pt``, on Meta's server): their publishers state no size or
  checksum beside the links, so a file is checked to load as a state dict of that family and type
  (:func:`stage1_kind`: the keys and shapes say which), no more (docs/stage1.md).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import CheckpointError, IS5NetError
from .io import open_append

SAM_PAGE = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
DIS_PAGE = "https://github.com/xuebinqin/DIS"
DIS_SAM_PAGE = "https://github.com/Tennine2077/DIS-SAM"
HQ_SAM_PAGE = "https://github.com/SysCV/sam-hq#model-checkpoints"
HQ_SAM_BASE = "https://huggingface.co/lkeab/hq-sam/resolve/main/"
SAM2_PAGE = "https://github.com/facebookresearch/sam2#model-description"
SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


@dataclass(frozen=True)
class WeightFile:
    """One official file. ``url`` None: the publisher shares it only through a page (``page``)."""

    name: str
    filename: str
    patterns: tuple[str, ...]  # file names found under IS5NET_HOME, the official one first
    what: str
    page: str
    url: Optional[str] = None
    size: Optional[int] = None
    sha256: Optional[str] = None
    md5_prefix: Optional[str] = None  # the publisher's: the hex digits in the file name
    drive: Optional[str] = None  # the Google Drive link of a page-only file
    stage1: Optional[str] = None  # a stage-1 model's FAMILY:TYPE, checked by verify when no checksum is published

    @property
    def checks(self) -> str:
        parts = [
            f"{self.size} bytes" if self.size else None,
            f"sha256 {self.sha256[:12]}..." if self.sha256 else None,
            f"md5 {self.md5_prefix}... (in the name)" if self.md5_prefix else None,
        ]
        if not any(parts) and self.stage1:
            return f"none published (loads as {self.stage1} weights)"
        return ", ".join(p for p in parts if p) or "none published (readable state dict only)"


def _hq_sam(kind: str, what: str) -> WeightFile:
    filename = f"sam_hq_vit_{kind}.pth"
    return WeightFile(
        f"sam_hq_vit_{kind}",
        filename,
        (filename,),
        what,
        HQ_SAM_PAGE,
        HQ_SAM_BASE + filename,
        stage1=f"hq-sam:vit_{kind}",
    )


def _sam2(kind: str) -> WeightFile:
    filename = f"sam2.1_hiera_{kind}.pt"
    what = f"SAM 2.1 Hiera-{kind.replace('_plus', '+').replace('_', ' ').title()}"
    return WeightFile(
        f"sam2.1_hiera_{kind}", filename, (filename,), what, SAM2_PAGE, SAM2_BASE + filename, stage1=f"sam2:{kind}"
    )


OFFICIAL: dict[str, WeightFile] = {
    f.name: f
    for f in (
        WeightFile(
            "vit_b",
            "sam_vit_b_01ec64.pth",
            ("sam_vit_b_01ec64.pth", "sam_vit_b*.pth"),
            "SAM ViT-B",
            SAM_PAGE,
            SAM_BASE + "sam_vit_b_01ec64.pth",
            375042383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            "01ec64",
        ),
        WeightFile(
            "vit_l",
            "sam_vit_l_0b3195.pth",
            ("sam_vit_l_0b3195.pth", "sam_vit_l*.pth"),
            "SAM ViT-L",
            SAM_PAGE,
            SAM_BASE + "sam_vit_l_0b3195.pth",
            1249524607,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            "0b3195",
        ),
        WeightFile(
            "vit_h",
            "sam_vit_h_4b8939.pth",
            ("sam_vit_h_4b8939.pth", "sam_vit_h*.pth"),
            "SAM ViT-H",
            SAM_PAGE,
            SAM_BASE + "sam_vit_h_4b8939.pth",
            2564550879,
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            "4b8939",
        ),
        WeightFile(
            "isnet",
            "isnet.pth",
            ("isnet.pth",),
            "IS-Net (DIS5K, for academic comparison)",
            DIS_PAGE,
            drive="https://drive.google.com/file/d/1KyMpRjewZdyYfxHPYcd-ZbanIXtin0Sn/view",
        ),
        WeightFile(
            "isnet-general-use",
            "isnet-general-use.pth",
            ("isnet-general-use.pth",),
            "IS-Net for general use",
            DIS_PAGE,
            drive="https://drive.google.com/file/d/1nV57qKuy--d5u1yvkng9aXW1KS4sOpOi/view",
        ),
        WeightFile(
            "dis-sam",
            "dis-sam.pth",
            ("dis-sam.pth", "dis_sam.pth", "gpu_itr_*maxF1*.pth", "dis-sam*.safetensors"),
            "DIS-SAM's IS5Net refiner (gpu_itr_24000_..._maxF1_0.9251_....pth)",
            DIS_SAM_PAGE,
            drive="https://drive.google.com/drive/folders/1fE_DCGKU3WA-HmZnqRzaazHe44Lx9RP2",
        ),
        _hq_sam("tiny", "Light HQ-SAM (TinyViT)"),
        _hq_sam("b", "HQ-SAM ViT-B"),
        _hq_sam("l", "HQ-SAM ViT-L"),
        _hq_sam("h", "HQ-SAM ViT-H"),
        *(_sam2(kind) for kind in ("tiny", "small", "base_plus", "large")),
    )
}

# name -> (file name patterns under IS5NET_HOME, where it is published): the lookup table of resolve_weights.
KNOWN_WEIGHTS: dict[str, tuple[tuple[str, ...], str]] = {
    n: (f.patterns, f"{f.page} ({f.what})") for n, f in OFFICIAL.items()
}

_ALIASES = {
    "dis_sam": "dis-sam",
    "dissam": "dis-sam",
    "isnet_general_use": "isnet-general-use",
    "vit-b": "vit_b",
    "vit-l": "vit_l",
    "vit-h": "vit_h",
    # a stage-1 name finds that model's official file: --stage1-checkpoint hq-sam:vit_b, sam2:tiny
    **{f.stage1: n for n, f in OFFICIAL.items() if f.stage1},
    **{f"sam:{t}": t for t in ("vit_b", "vit_l", "vit_h")},
}
CHUNK = 1 << 20


def weights_home() -> Path:
    return Path(os.environ.get("IS5NET_HOME", Path.home() / ".is5net")).expanduser()


def official(name: str) -> WeightFile:
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in OFFICIAL:
        raise IS5NetError(f"{name!r}: not a known weights name; known: {', '.join(OFFICIAL)}")
    return OFFICIAL[key]


def find(entry: WeightFile, home: Optional[Path] = None) -> Optional[Path]:
    """The file of ``entry`` under ``home`` (default IS5NET_HOME), or None."""
    home = weights_home() if home is None else home
    for pattern in entry.patterns:
        found = sorted(p for p in home.glob(pattern) if p.is_file())
        if found:
            return found[0]
    return None


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """A path as given if it exists; else a known name looked up under ``IS5NET_HOME``; else an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    key = _ALIASES.get(str(name_or_path).lower(), str(name_or_path).lower())
    if key in KNOWN_WEIGHTS:
        home = weights_home()
        entry = OFFICIAL[key]
        found = find(entry, home)
        if found is not None:
            return found
        fetch = (
            f"`is5net weights download {key}`"
            if entry.url
            else f"it is published in {entry.page} (see `is5net weights download {key}` for the steps)"
        )
        raise IS5NetError(
            f"{name_or_path!r}: no {entry.patterns[0]} under {home} (set IS5NET_HOME or give a path); {fetch}"
        )
    raise IS5NetError(f"{name_or_path}: no such file (and not a known weights name: {', '.join(KNOWN_WEIGHTS)})")


# ------------------------------------------------------------------------------------------- verify
@dataclass
class Verdict:
    ok: bool
    detail: str  # what was checked, or what is wrong (naming the expected and the actual value)


def digests(path: Path, progress: Optional[Callable[[int], None]] = None) -> tuple[str, str]:
    """``(sha256, md5)`` hex digests of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            sha.update(block)
            md5.update(block)
            if progress is not None:
                progress(len(block))
    return sha.hexdigest(), md5.hexdigest()


def verify_file(
    entry: WeightFile, path: Path, hash_it: bool = True, progress: Optional[Callable[[int], None]] = None
) -> Verdict:
    """Check ``path`` against what is known of ``entry``: size, SHA-256, the MD5 prefix of its name.

    A file with no published checksum is checked to be a loadable state dict instead (weights only).
    """
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return Verdict(False, f"size {size} bytes, expected {entry.size}: incomplete or another file")
    if not hash_it:
        return Verdict(True, f"size {size} bytes ok (not hashed)")
    if entry.sha256 or entry.md5_prefix:
        sha, md5 = digests(path, progress)
        if entry.sha256 and sha != entry.sha256:
            return Verdict(False, f"checksum mismatch: sha256 {sha}, expected {entry.sha256}")
        if entry.md5_prefix and not md5.startswith(entry.md5_prefix):
            return Verdict(
                False, f"checksum mismatch: md5 {md5} does not start with {entry.md5_prefix} (the file name's)"
            )
        return Verdict(True, f"{size} bytes, sha256 and md5 prefix ok")
    try:
        from .checkpoint import read_state_dict  # torch: only for files without a published checksum

        sd, _ = read_state_dict(path)
        kind = stage1_kind(sd, path) if entry.stage1 else None
    except IS5NetError as exc:
        return Verdict(False, str(exc))
    if entry.stage1:
        found = ":".join(kind) if kind else "no stage-1 model"
        if found != entry.stage1:
            return Verdict(False, f"holds {found} weights, expected {entry.stage1}: another file")
        return Verdict(True, f"{size} bytes, loads as {entry.stage1} weights (no published checksum)")
    return Verdict(True, f"{size} bytes, a readable state dict of {len(sd)} tensors (no published checksum)")


# ------------------------------------------------------------------------ what a stage-1 file holds
# Image-encoder width -> type. SAM's tiny (width 32) is the random test SAM (is5net.inference.stage1.sam).
_SAM_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", 32: "tiny"}
_HQ_SAM_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
# SAM 2's Hiera trunk: (patch-embedding width, number of blocks) -> type (SAM 2 and 2.1 alike).
_SAM2_TRUNKS = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}


def stage1_kind(state_dict: dict, path: os.PathLike | str = "<state dict>") -> Optional[tuple[str, str]]:
    """``(family, type)`` of a stage-1 checkpoint read off its keys and shapes, or None for none of them.

    SAM 2 has an ``image_encoder.trunk`` (Hiera) and a ``sam_mask_decoder``; HQ-SAM has SAM's keys plus the
    HQ token ``mask_decoder.hf_token.weight`` (its ``vit_tiny`` a TinyViT patch embedding
    ``image_encoder.patch_embed.seq.0.c.weight``); SAM has ``mask_decoder.iou_token.weight`` without it.
    The width (and for SAM 2 the depth) of the image encoder gives the type. A family's keys with a shape
    of no known type raise :class:`CheckpointError` naming ``path``.
    """
    if any(k.startswith("image_encoder.trunk.") for k in state_dict) and any(
        k.startswith("sam_mask_decoder.") for k in state_dict
    ):
        w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
        width = int(w.shape[0]) if w is not None else 0
        depth = len({k.split(".")[3] for k in state_dict if k.startswith("image_encoder.trunk.blocks.")})
        return "sam2", _typed(_SAM2_TRUNKS.get((width, depth)), path, f"SAM 2 trunk of width {width}, {depth} blocks")
    embed = state_dict.get("image_encoder.patch_embed.proj.weight")
    width = int(embed.shape[0]) if embed is not None else 0
    if "mask_decoder.hf_token.weight" in state_dict:
        if "image_encoder.patch_embed.seq.0.c.weight" in state_dict:
            return "hq-sam", "vit_tiny"
        return "hq-sam", _typed(_HQ_SAM_WIDTHS.get(width), path, f"HQ-SAM image encoder of width {width}")
    if "mask_decoder.iou_token.weight" in state_dict and embed is not None:
        return "sam", _typed(_SAM_WIDTHS.get(width), path, f"SAM image encoder of width {width}")
    return None


def _typed(found: Optional[str], path, what: str) -> str:
    if found is None:
        raise CheckpointError(f"{path}: a {what} matches no known type")
    return found


# ----------------------------------------------------------------------------------------- download
def page_only_steps(entry: WeightFile, home: Path) -> str:
    """What to do for a file the publisher shares only through a page (Google Drive)."""
    return (
        f"{entry.name}: {entry.what} is published only through a web page, not a direct link, so it "
        f"cannot be downloaded here. To place it:\n"
        f"  1. open {entry.drive or entry.page} (linked from {entry.page}) in a browser and download it;\n"
        f"  2. move it to {home / entry.filename} (any of these names is found: "
        f"{', '.join(entry.patterns)});\n"
        f"  3. run `is5net weights verify {entry.name}` (it must load as a state dict; no checksum is "
        f"published for it)."
    )


def download(
    name: str | WeightFile,
    to: Optional[Path] = None,
    mirror: Optional[str] = None,
    quiet: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download the official file ``name`` (or any :class:`WeightFile`) into ``to`` (default IS5NET_HOME).

    Returns the path of the verified file.

    A partial file (``<file>.part`` beside the target) from an interrupted run is resumed with an HTTP
    ``Range`` request (started over when the server ignores it). The whole file is verified
    (:func:`verify_file`) before the rename that puts it in place; a file that fails is deleted, so a corrupt
    download is never left under its final name nor resumed. ``mirror``: a base URL serving the same file
    name (checked the same way).
    """
    entry = name if isinstance(name, WeightFile) else official(name)
    home = weights_home() if to is None else Path(to).expanduser()
    if entry.url is None:
        raise IS5NetError(page_only_steps(entry, home))
    target = home / entry.filename
    if target.exists():
        verdict = verify_file(entry, target)
        if verdict.ok:
            print(f"{target}: already there and verified ({verdict.detail})", file=sys.stderr)
            return target
        raise IS5NetError(f"{target} exists but fails verification ({verdict.detail}); remove it and run again")
    home.mkdir(parents=True, exist_ok=True)
    url = mirror.rstrip("/") + "/" + entry.filename if mirror else entry.url
    part = target.with_name(target.name + ".part")
    announced = _fetch(url, part, entry.size, quiet, timeout)
    if announced is not None and part.stat().st_size < announced:
        raise IS5NetError(
            f"{url}: the transfer stopped at {part.stat().st_size} of {announced} bytes; kept in "
            f"{part}, run the same command again to resume"
        )
    verdict = verify_file(entry, part)
    if not verdict.ok:
        part.unlink(missing_ok=True)  # a corrupt file must not be resumed, nor taken for the real one
        raise IS5NetError(f"{entry.filename} from {url}: {verdict.detail}; the download was deleted")
    os.replace(part, target)
    return target


def _fetch(url: str, part: Path, expected: Optional[int], quiet: bool, timeout: float) -> Optional[int]:
    """Download ``url`` into ``part``, appending to what is there (HTTP Range).

    Returns the whole file's size as the server announced it (None when it did not say): a ``part``
    shorter than that was cut short and can be resumed; one as long is complete, right or wrong.
    """
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    if expected is not None and have > expected:
        part.unlink()  # longer than the real file: not a prefix of it
        have = 0
    if expected is not None and have == expected:
        return expected  # complete already (interrupted between the transfer and the check)
    headers = {"User-Agent": "is5net", **({"Range": f"bytes={have}-"} if have else {})}
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range not satisfiable: what we have is all there is; the check decides
            return have
        raise IS5NetError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise IS5NetError(
            f"{url}: cannot connect ({getattr(exc, 'reason', exc)}); a partial file is kept in "
            f"{part} and resumed next time"
        ) from None
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            have = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else expected
        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name[:-5],
            disable=True if quiet else None,
            file=sys.stderr,
        )
        try:
            with open_append(part, binary=True) if resumed else open(part, "wb") as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        except (OSError, TimeoutError, http.client.HTTPException) as exc:
            raise IS5NetError(
                f"{url}: transfer interrupted ({exc}); {part.stat().st_size} bytes kept in {part}, "
                f"run the same command again to resume"
            ) from None
        finally:
            bar.close()
    return total
