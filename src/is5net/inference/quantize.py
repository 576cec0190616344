"""The refiner in int8: its ONNX export quantised post-training with NNCF, run by OpenVINO on the CPU.

``--precision int8`` (docs/deployment.md, "Precision"): the convolutions' weights and inputs are quantised to
8 bits, with scales measured on *calibration* inputs. Those are the refiner's real inputs, built by the
contract (:func:`is5net.contract.build_input`, the rule the predictor follows) from image / GT pairs: the
box is the GT's tight box (as in training and evaluation) and the coarse mask the pair's stage-1 mask
(``coarse/<stem>.png``) or, without one, the GT. Where the pairs come from (a folder, or the demo's data by
default) is :mod:`is5net.demo.calibration`'s; this module takes any :class:`Calibration`.

The quantised model is cached under ``$IS5NET_HOME/cache/int8`` by the export's cache rule
(:func:`is5net.export.cached_file`), keyed by the weights, the calibration files' bytes, the settings and the
OpenVINO / NNCF versions: the second run with the same inputs reads it back in well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from torch import nn

from ..checkpoint import RefinerConfig
from ..contract import build_input, tight_box
from ..defaults import CALIBRATION_COUNT
from ..errors import IS5NetError
from ..io import load_image, load_mask
from .backends import OpenVINOBackend

log = logging.getLogger("is5net")

INSTALL = "pip install 'is5net[int8]' (nncf and openvino)"
#: Calibration images used by default: NNCF suggests 300, but on the demo 64 measured as well (benchmarks/
#: bench_precision.py) and each one is a forward pass of the fp32 model (about 2 s at 1024² on 2 cores).
DEFAULT_COUNT = CALIBRATION_COUNT
PRESETS = ("mixed", "performance")


@dataclass(frozen=True)
class Int8Settings:
    """How the refiner is quantised (each one part of the cache key).

    count: calibration images used (NNCF's ``subset_size``), 1..10000.
    preset: ``mixed`` (symmetric weights, asymmetric activations: the refiner's first input is centred on 0,
        its ReLU outputs are not) or ``performance`` (both symmetric).
    keep_head: the last convolution (side output 1, the logits) stays in float: it is 1 of ~120
        convolutions and the one whose rounding lands on the mask's edge directly.
    fast_bias_correction: NNCF's fast bias correction (the slow one needs many more forward passes).
    """

    count: int = DEFAULT_COUNT
    preset: str = "mixed"
    keep_head: bool = True
    fast_bias_correction: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 1 <= self.count <= 10000:
            raise IS5NetError(f"calibration count {self.count!r}: expected a whole number from 1 to 10000")
        if self.preset not in PRESETS:
            raise IS5NetError(f"int8 preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        for name in ("keep_head", "fast_bias_correction"):
            if not isinstance(getattr(self, name), bool):
                raise IS5NetError(f"int8 setting {name}={getattr(self, name)!r}: expected True or False")

    def key(self) -> str:
        return f"n{self.count}-{self.preset}-head{'F' if self.keep_head else 'Q'}-fbc{int(self.fast_bias_correction)}"


@dataclass(frozen=True)
class CalibrationFiles:
    """One calibration pair: the image, its GT mask (the box), and its stage-1 mask (None: the GT stands in)."""

    image: Path
    gt: Path
    coarse: Optional[Path] = None


class Calibration:
    """Where the calibration pairs come from: :meth:`files` for a model of input side ``input_size``.

    Immutable once made, so it is shared rather than copied (``PredictorOptions`` copies its fields).
    """

    name = "calibration"
    settings = Int8Settings()
    progress = False

    def files(self, input_size: int) -> list[CalibrationFiles]:
        raise NotImplementedError

    def __deepcopy__(self, memo) -> "Calibration":
        return self


def calibration_key(files: Sequence[CalibrationFiles]) -> str:
    """SHA-256 of the calibration files' names and bytes, in order: another set, or an edited file, is another key."""
    h = hashlib.sha256()
    for f in files:
        for path in (f.image, f.gt, f.coarse):
            h.update(b"-" if path is None else Path(path).name.encode() + b"\0" + Path(path).read_bytes())
    return h.hexdigest()


def calibration_inputs(config: RefinerConfig, files: Sequence[CalibrationFiles], progress: bool = False) -> list:
    """The refiner inputs of ``files``: ``1 x C x S x S`` float32 arrays, normalised, built by the contract.

    A pair whose GT is empty has no box and is left out; none left is an error naming the first file.
    """
    from tqdm import tqdm

    inputs = []
    for f in tqdm(files, desc="int8 calibration inputs", unit="img", disable=not progress):
        gt = load_mask(f.gt)
        box = tight_box(gt)
        if box is None:
            continue
        rgb = load_image(f.image, gt.shape)
        coarse = None if int(config.in_ch) == 3 else (gt if f.coarse is None else load_mask(f.coarse))
        x = build_input(rgb, coarse, box if coarse is not None else None, config.input_size, config.mean, config.std)
        inputs.append(x[None].numpy())
    if not inputs:
        raise IS5NetError(f"calibration: every GT mask is empty (e.g. {files[0].gt}); a box needs a foreground")
    return inputs


def _head_names(model) -> list[str]:
    """The friendly name of the convolution that makes the model's output (the path back through resizes)."""
    node = model.output(0).get_node().input_value(0).get_node()
    for _ in range(16):
        if node.get_type_name() == "Convolution":
            return [node.get_friendly_name()]
        if node.get_input_size() == 0:
            break
        node = node.input_value(0).get_node()
    return []


def quantize_onnx(onnx_path: Path, inputs: list, settings: Int8Settings, progress: bool = False):
    """``onnx_path`` read by OpenVINO and quantised by ``nncf.quantize`` on ``inputs`` -> an ``openvino.Model``."""
    # NNCF imports torch's C++-extension helper, which warns on a machine without CUDA: not ours to show.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise IS5NetError(f"--precision int8 needs NNCF and OpenVINO: {INSTALL}") from None
    model = ov.Core().read_model(str(onnx_path))
    ignored = nncf.IgnoredScope(names=_head_names(model), validate=False) if settings.keep_head else None
    preset = nncf.QuantizationPreset.MIXED if settings.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    # NNCF draws its bars with rich on stdout: on stderr with ours, nowhere with -q.
    out = sys.stderr if progress else io.StringIO()
    try:
        nncf_log.setLevel(logging.INFO if progress else logging.ERROR)
        with contextlib.redirect_stdout(out):
            return nncf.quantize(
                model,
                nncf.Dataset(inputs),
                preset=preset,
                subset_size=len(inputs),
                fast_bias_correction=settings.fast_bias_correction,
                ignored_scope=ignored,
            )
    finally:
        nncf_log.setLevel(level)


def _versions() -> str:
    from importlib.metadata import version

    try:
        return f"ov{version('openvino')}-nncf{version('nncf')}"
    except Exception:  # noqa: BLE001 - not installed: quantize_onnx says what to install
        raise IS5NetError(f"--precision int8 needs NNCF and OpenVINO: {INSTALL}") from None


def _source_digest(refiner: Union[nn.Module, os.PathLike, str]) -> str:
    from ..export import weights_digest

    if isinstance(refiner, nn.Module):
        return weights_digest(refiner)
    return hashlib.sha256(Path(refiner).read_bytes()).hexdigest()


def _save(model, path: Path) -> None:
    """``path`` (.xml) and its .bin, the .bin renamed into place first: the .xml present means both are whole."""
    import openvino as ov

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    finally:
        for p in (tmp, tmp.with_suffix(".bin")):
            with contextlib.suppress(OSError):
                p.unlink()


def cached_int8(
    refiner: Union[nn.Module, os.PathLike, str], config: RefinerConfig, calibration: Calibration, log_fn=None
) -> Path:
    """The int8 OpenVINO model (.xml) of ``refiner`` (a module, or an ONNX file of ``is5net export-onnx``),
    quantised on ``calibration`` once and kept in ``$IS5NET_HOME/cache/int8``."""
    from ..export import cache_dir, cached_file, cached_onnx

    if not isinstance(calibration, Calibration):
        raise IS5NetError(
            f"calibration {calibration!r}: expected a Calibration (is5net.demo.calibration.calibration_set)"
        )
    versions = _versions()
    size = config.input_size if isinstance(config.input_size, int) else int(config.input_size[0])
    files = calibration.files(size)
    settings = calibration.settings
    key = hashlib.sha256(
        "|".join([_source_digest(refiner), calibration_key(files), settings.key(), versions]).encode()
    ).hexdigest()[:24]
    path = cache_dir("int8") / f"refiner-{key}.xml"

    def build(target: Path) -> None:
        onnx_path = cached_onnx(refiner, log=log_fn) if isinstance(refiner, nn.Module) else Path(refiner)
        inputs = calibration_inputs(config, files[: settings.count], calibration.progress)
        _save(quantize_onnx(onnx_path, inputs, settings, calibration.progress), target)

    message = f"quantising the refiner to int8 once on {calibration.name} (kept in {path.parent} for the next runs)"
    return cached_file(path, build, message, log_fn, companions=(".bin",))


class Int8Backend(OpenVINOBackend):
    """OpenVINO running the NNCF-quantised refiner (its float parts, e.g. the kept head, in fp32)."""

    def __init__(self, xml_path: os.PathLike | str, label: str = "", threads: Optional[int] = None):
        super().__init__(xml_path, precision="fp32", threads=threads)
        self.precision, self.label = "int8", label

    @property
    def description(self) -> str:
        return f"openvino {self.version} on cpu, int8 (NNCF, calibrated on {self.label or 'a calibration set'})"


def int8_backend(
    refiner: Union[nn.Module, os.PathLike, str], calibration: Optional[Calibration], threads: Optional[int] = None
) -> Int8Backend:
    """The int8 refiner, ready to run: quantised (or read from the cache) and compiled."""
    if calibration is None:
        raise IS5NetError(
            "precision int8 needs calibration images: calibration=is5net.demo.calibration.calibration_set() "
            "(the demo's data) or calibration_set(DIR) (a folder with im/ and gt/)"
        )
    if isinstance(refiner, nn.Module):
        config = getattr(refiner, "config", None) or RefinerConfig.for_model(refiner)
    else:
        config = _config_of_onnx(Path(refiner))
    xml = cached_int8(refiner, config, calibration, log_fn=log.info)
    return Int8Backend(xml, calibration.name, threads=threads)


def _config_of_onnx(path: Path) -> RefinerConfig:
    """The input contract an ONNX export carries in its metadata (is5net.export.refiner_metadata)."""
    import json

    from ..export import read_metadata

    if not path.is_file():
        raise IS5NetError(f"{path}: no such ONNX file")
    meta = read_metadata(path)
    if meta.get("format") != "is5net-refiner":
        raise IS5NetError(f"{path}: not an ONNX refiner made by is5net export-onnx (its metadata says no input size)")
    return RefinerConfig(
        model=meta["model"],
        in_ch=int(meta["in_ch"]),
        input_size=json.loads(meta["input_size"]),
        mean=json.loads(meta["mean"]),
        std=json.loads(meta["std"]),
    )
