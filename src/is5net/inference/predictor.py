"""IS5NetPredictor: box (and clicks) -> SAM coarse mask -> IS5Net refinement, one image embedding per image.

The refiner's input and output follow the one input contract, :mod:`is5net.contract`
(docs/input-contract.md): the predictor only decides *when* each part is computed. The RGB channels are
resized once per image in :meth:`set_image`, the two prompt channels once per box, on the device.

Clicks (SAM's point prompts) go to stage 1 only, beside their box: they change the coarse mask, and the
refiner sees that mask and the box exactly as it would without them (docs/predict.md, "Clicks"), so a
refiner trained on box + mask needs nothing new.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..checkpoint import RefinerConfig
from ..contract import (
    DEFAULT_MARGIN,
    DEFAULT_MAX_SIDE,
    DEFAULT_TILE_SCALE,
    REGIONS,
    binarize,
    binary_mask,
    check_mask_size,
    normalize_input,
    resize_prompt,
    resize_rgb,
    soft_masks,
    tight_box,
)
from ..defaults import TILE_SCALE_RANGE
from ..errors import IS5NetError
from ..io import to_rgb_uint8
from ..runtime import autocast, check_precision, enable_fast_cuda, resolve_device
from .backends import refiner_runner
from .boxes import validate_box, validate_clicks
from .regions import RegionRefiner
from .stage1 import Stage1, stage_for

BOX_CHANNELS = ("user", "sam_mask")


@dataclass
class Prediction:
    """One box's result, all arrays at the original image size ``H x W``.

    mask: float32 soft mask in [0, 1] (the map evaluation scores; ``binary()`` thresholds it).
    sam_mask: bool coarse mask (SAM's, or the one given); None for a 3-channel IS-Net.
    sam_score: SAM's predicted IoU of the kept mask; None when the coarse mask was given or no SAM ran.
    box: the box used, ``[x0, y0, x1, y1]`` after clipping (None for IS-Net without a box).
    points, point_labels: the box's clicks as given to stage 1 (``[[x, y], ...]``, ``[1, 0, ...]``), or None.
    """

    mask: np.ndarray
    sam_mask: Optional[np.ndarray]
    sam_score: Optional[float]
    box: Optional[list[float]]
    points: Optional[list[list[float]]] = None
    point_labels: Optional[list[int]] = None

    def binary(self, threshold: Union[float, str] = 0.5) -> np.ndarray:
        """The mask thresholded at ``threshold`` (in [0, 1]) or at Otsu's threshold (``"otsu"``)."""
        return binarize(self.mask, threshold)


ImageLike = Union[np.ndarray, "PIL.Image.Image"]  # noqa: F821


class IS5NetPredictor:
    """Segment objects given by boxes (like ``SamPredictor``: ``set_image`` once, ``predict`` many).

    Args:
        sam: a SAM model (``load_sam``), a ready stage-1 object (``prompts.GrabCutStage``: ``set_image``,
            ``predict(boxes) -> (masks, scores or None)``), or None when the caller gives the coarse masks (or
            the refiner is a 3-channel IS-Net, which uses no prompt).
        refiner: IS5Net (5 channels) or IS-Net (3 channels), e.g. from ``load_refiner``; its ``config``
            (input size, mean, std) is honoured.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None (CUDA when present).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only): autocast for both stages; ``"int8"``: the
            refiner quantised by NNCF and run by OpenVINO on the CPU (stage 1 in fp32), calibrated on
            ``calibration`` (:mod:`is5net.inference.quantize`; docs/deployment.md, "Precision").
        mask_choice: SAM mask kept, ``"first"`` (``masks[0]``, the reference) or ``"best"`` (highest IoU).
        box_channel: ``"user"`` (the given box, the paper's evaluation) or ``"sam_mask"`` (the tight box of
            the coarse mask, as the reference demo notebook draws it).
        batch_size: boxes refined per forward pass in ``predict_batch``.
        sam_resize: ``"pil"`` (default: exactly ``SamPredictor.set_image``, the reference masks) or ``"torch"``
            (resize on the device: faster for large photos on a GPU, masks may differ slightly).
        fast: fold BatchNorm into the convolutions, channels_last and cuDNN autotuning on CUDA (same math).
        backend: the refiner's runtime, ``"torch"`` (this class's path), ``"onnxruntime"``, ``"openvino"`` (CPU),
            ``"auto"`` (the fastest installed one matching the reference: :mod:`is5net.inference.backends`), or a ready
            backend object; :attr:`backend` describes the one used (name, version, device, precision).
        region, margin, max_side, tile_scale: what part of the image the refiner sees and at what scale
            (docs/input-contract.md, "Regions"); ``region`` and ``tile_scale`` default to what the checkpoint
            was trained with.
    """

    def __init__(
        self,
        sam: Optional[nn.Module],
        refiner: nn.Module,
        device: Optional[str | torch.device] = None,
        precision: str = "fp32",
        mask_choice: str = "first",
        box_channel: str = "user",
        batch_size: int = 8,
        sam_resize: str = "pil",
        fast: bool = True,
        backend: object = "torch",
        region: Optional[str] = None,
        margin: float = DEFAULT_MARGIN,
        max_side: int = DEFAULT_MAX_SIDE,
        tile_scale: Optional[float] = None,
        calibration: object = None,
    ):
        self.device = resolve_device(device)
        self.precision = precision
        check_precision(precision, self.device)
        if box_channel not in BOX_CHANNELS:
            raise IS5NetError(f"box channel {box_channel!r}: choose one of {', '.join(BOX_CHANNELS)}")
        self.box_channel = box_channel
        self.batch_size = max(1, int(batch_size))
        self.config: RefinerConfig = getattr(refiner, "config", None) or RefinerConfig.for_model(refiner)
        self.in_ch = int(self.config.in_ch)
        if self.in_ch not in (3, 5):
            raise IS5NetError(f"the refiner takes {self.in_ch} channels; expected 3 (IS-Net) or 5 (IS5Net)")
        refiner = refiner.eval()
        if fast and hasattr(refiner, "fold_batchnorm"):
            refiner = refiner.fold_batchnorm()
        refiner = refiner.to(self.device)
        if self.device.type == "cuda":
            if fast:
                enable_fast_cuda()
                refiner = refiner.to(memory_format=torch.channels_last)
        self.refiner = refiner.requires_grad_(False)
        self.channels_last = fast and self.device.type == "cuda"
        # Another runtime takes the refiner's place (its forward_logits); the contract around it is unchanged.
        runner, self.backend = refiner_runner(backend, refiner, self.device, precision, calibration)
        if runner is not None:
            self.refiner, self.channels_last = runner, False
        self.sam_stage = stage_for(sam.to(self.device), mask_choice, sam_resize) if isinstance(sam, nn.Module) else sam
        size = self.config.input_size
        self.input_size = (size, size) if isinstance(size, int) else tuple(size)
        self.region = region or getattr(self.config, "region", "image")
        tile_scale = getattr(self.config, "tile_scale", DEFAULT_TILE_SCALE) if tile_scale is None else tile_scale
        _check_region(self.region, margin, max_side, tile_scale)
        self.margin, self.max_side, self.tile_scale = float(margin), int(max_side), float(tile_scale)
        self._regions = RegionRefiner(
            self._logits, self.input_size[0], self.config.mean, self.config.std, tile_batch=self.batch_size
        )
        self.reset_image()

    # ------------------------------------------------------------------------------------------ image
    def reset_image(self) -> None:
        self._rgb: Optional[np.ndarray] = None
        self._rgb_input: Optional[torch.Tensor] = None
        self._rgb_t: Optional[torch.Tensor] = None
        self.original_size: Optional[tuple[int, int]] = None

    @property
    def is_image_set(self) -> bool:
        return self._rgb is not None

    @torch.inference_mode()
    def set_image(self, image: ImageLike) -> None:
        """Set the image to segment and compute what every box shares (SAM embedding, resized RGB).

        ``image``: ``HxWx3`` uint8 RGB as displayed; also accepted (and converted as ``is5net.io.to_rgb_uint8``
        documents): grayscale ``HxW``, RGBA (alpha dropped), uint16 (scaled to 8 bits), float [0, 1], PIL.
        """
        rgb = to_rgb_uint8(image)
        self.reset_image()
        rgb_t = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)  # 3xHxW uint8 on device
        if self.sam_stage is not None:
            with autocast(self.device, self.precision):
                self.sam_stage.set_image(rgb, rgb_t)
        self._rgb_input = normalize_input(
            resize_rgb(rgb_t, self.input_size), self.config.mean[:3], self.config.std[:3], inplace=True
        )[None]
        self._rgb = rgb
        self._rgb_t = rgb_t
        self.original_size = rgb.shape[:2]

    # ---------------------------------------------------------------------------------------- predict
    def predict(
        self,
        box: Optional[Sequence[float]] = None,
        coarse_mask: Optional[np.ndarray] = None,
        region: Optional[str] = None,
        points: Optional[Sequence[Sequence[float]]] = None,
        point_labels: Optional[Sequence[int]] = None,
    ) -> Prediction:
        """Segment the object in ``box`` (``[x0, y0, x1, y1]``, pixels of the image as displayed).

        ``coarse_mask``: an ``HxW`` stage-1 mask (bool, 0/1 or uint8 0/255, original size) to use instead
        of SAM's. A 3-channel IS-Net refiner ignores the box and needs neither.
        ``points``, ``point_labels``: clicks that refine stage 1's mask, as ``SamPredictor.predict``'s
        ``point_coords`` (``K x 2``, ``(x, y)`` pixels of the image as displayed, inside it) and
        ``point_labels`` (``K``: 1 a foreground click, 0 a background one). They prompt stage 1 together with
        the box (so they need one, and a stage 1: not a given ``coarse_mask``); the refiner then gets the
        resulting coarse mask and the box. The image is not encoded again.
        ``region``: what the refiner sees (docs/input-contract.md, "Regions"): ``"image"`` (the whole image at
        the model's input size, the paper's), ``"box"`` (the box plus a margin, at the model's input size,
        pasted back; 0 outside) or ``"tiles"`` (that crop at native resolution, in tiles); default: the
        predictor's, which is the checkpoint's.
        """
        clicked = points is not None or point_labels is not None
        if box is None and clicked:
            raise IS5NetError("clicks need a box: the points prompt stage 1 beside [x0, y0, x1, y1], and the refiner "
                              "is prompted by the box")  # fmt: skip
        if self.in_ch == 3 and box is None:
            return self._predict_many([None], None, region)[0]
        if box is None:
            raise IS5NetError("a box is needed: IS5Net is prompted by [x0, y0, x1, y1]")
        masks = None if coarse_mask is None else [coarse_mask]
        if not clicked:
            return self._predict_many([box], masks, region)[0]
        return self._predict_many([box], masks, region, [points], [point_labels])[0]

    def predict_batch(
        self,
        boxes: Sequence[Sequence[float]],
        coarse_masks: Optional[Sequence[np.ndarray]] = None,
        region: Optional[str] = None,
        points: Optional[Sequence] = None,
        point_labels: Optional[Sequence] = None,
    ) -> list[Prediction]:
        """Segment N boxes of the current image, batched through SAM's decoder and the refiner.

        ``points``, ``point_labels``: each box's clicks (see :meth:`predict`), one entry per box: item ``i`` is
        box ``i``'s ``K_i x 2`` points and ``K_i`` labels, or None (or empty) for a box without clicks; boxes
        may have different numbers of clicks. Gives the same results as calling :meth:`predict` for each box
        (up to float rounding).
        """
        boxes = list(boxes)
        if coarse_masks is not None and len(coarse_masks) != len(boxes):
            raise IS5NetError(f"{len(boxes)} boxes but {len(coarse_masks)} coarse masks")
        if not boxes:
            return []
        return self._predict_many(boxes, coarse_masks, region, points, point_labels)

    @torch.inference_mode()
    def _predict_many(
        self,
        boxes: list,
        coarse_masks: Optional[Sequence[np.ndarray]],
        region: Optional[str] = None,
        points: Optional[Sequence] = None,
        point_labels: Optional[Sequence] = None,
    ) -> list[Prediction]:
        region = region or self.region
        _check_region(region, self.margin, self.max_side, self.tile_scale)
        if not self.is_image_set:
            raise IS5NetError("call set_image(image) before predict")
        h, w = self.original_size
        if self.in_ch == 3 and (points is not None or point_labels is not None):
            raise IS5NetError("a 3-channel IS-Net runs no stage 1, so it takes no clicks: use an IS5Net checkpoint")
        if self.in_ch == 3:
            # IS-Net baseline: no prompt, so every box gives the same map; compute it once.
            soft = self._refine(self._rgb_input)[0]
            return [Prediction(soft, None, None, None if b is None else validate_box(b, w, h).tolist()) for b in boxes]

        checked = [validate_box(b, w, h) for b in boxes]
        clicks = validate_clicks(points, point_labels, len(checked), w, h)
        if clicks is not None and coarse_masks is not None:
            raise IS5NetError("clicks prompt stage 1, and a given coarse mask takes its place: give one or the other")
        coarse, scores = self._stage1(checked, coarse_masks, clicks)
        results = self._refined(checked, coarse, scores, region)
        for pred, c in zip(results, clicks or ()):
            if c is not None:
                pred.points, pred.point_labels = c[0].tolist(), c[1].tolist()
        return results

    def _stage1(self, checked: list[np.ndarray], coarse_masks, clicks) -> tuple[torch.Tensor, list]:
        """The coarse masks (``N x H x W`` bool on the device) and SAM's scores: given, or stage 1's."""
        if coarse_masks is not None:
            return torch.stack([self._coarse_to_tensor(m) for m in coarse_masks]), [None] * len(checked)
        if self.sam_stage is None:
            raise IS5NetError("no SAM was given: pass coarse_mask (the stage-1 mask) or build the predictor with a SAM")
        with autocast(self.device, self.precision):
            coarse, score_t = stage1_predict(self.sam_stage, np.stack(checked), clicks)
        coarse = coarse.to(self.device)  # a stage object may answer on its own device (GrabCut: the CPU)
        return coarse, [None] * len(checked) if score_t is None else [float(s) for s in score_t.cpu()]

    def _refined(self, checked: list[np.ndarray], coarse: torch.Tensor, scores: list, region: str) -> list[Prediction]:
        """The refiner over the boxes and their coarse masks, in ``region``, batched when it is the image."""
        results: list[Prediction] = []
        if region != "image":
            run = self._regions.box if region == "box" else self._tiles
            for i, (b, cb) in enumerate(zip(checked, self._channel_boxes(coarse, checked))):
                soft = run(self._rgb_t, coarse[i], b, cb, self.margin)
                results.append(Prediction(soft, coarse[i].cpu().numpy().astype(bool), scores[i], b.tolist()))
            return results
        for start in range(0, len(checked), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            masks = coarse[chunk]
            x = self._five_channel_input(masks, self._channel_boxes(masks, checked[chunk]))
            soft = self._refine(x)
            for i, b in enumerate(checked[chunk]):
                results.append(Prediction(soft[i], masks[i].cpu().numpy().astype(bool), scores[start + i], b.tolist()))
        return results

    @torch.inference_mode()
    def refiner_input(self, boxes: Sequence[Sequence[float]], coarse_masks: Sequence[np.ndarray]) -> torch.Tensor:
        """The refiner's input for N boxes of the current image and their coarse masks, as :meth:`predict_batch`
        builds it: ``N x C x S x S`` float32, normalised (C = 5; 3 for an IS-Net, which ignores the prompts).

        For inspecting or exporting what the refiner sees; the rules are :mod:`is5net.contract`'s.
        """
        if not self.is_image_set:
            raise IS5NetError("call set_image(image) before refiner_input")
        if self.in_ch == 3:
            return self._rgb_input.expand(max(1, len(boxes)), -1, -1, -1).clone()
        h, w = self.original_size
        checked = [validate_box(b, w, h) for b in boxes]
        if len(coarse_masks) != len(checked):
            raise IS5NetError(f"{len(checked)} boxes but {len(coarse_masks)} coarse masks")
        masks = torch.stack([self._coarse_to_tensor(m) for m in coarse_masks])
        return self._five_channel_input(masks, self._channel_boxes(masks, checked))

    def _channel_boxes(self, masks: torch.Tensor, boxes: list[np.ndarray]) -> list[np.ndarray]:
        """The boxes drawn into the box channel: the user's, or the coarse masks' tight boxes (``sam_mask``)."""
        if self.box_channel == "sam_mask":
            return [self._sam_box(m, b) for m, b in zip(masks, boxes)]
        return list(boxes)

    def _sam_box(self, mask: torch.Tensor, fallback: np.ndarray) -> np.ndarray:
        tight = tight_box(mask)
        return fallback if tight is None else np.asarray(tight, dtype=np.float64)

    def _coarse_to_tensor(self, mask) -> torch.Tensor:
        m = binary_mask(mask)
        check_mask_size(m.shape, self.original_size, "the coarse mask")
        return torch.from_numpy(np.ascontiguousarray(m)).to(self.device)

    def _five_channel_input(self, masks: torch.Tensor, boxes: list[np.ndarray]) -> torch.Tensor:
        """``B x 5 x S x S`` normalised input from coarse masks (``B x H x W`` bool) and boxes."""
        prompt = normalize_input(
            resize_prompt(masks, boxes, self.input_size), self.config.mean[3:], self.config.std[3:], inplace=True
        )
        return torch.cat((self._rgb_input.expand(masks.shape[0], -1, -1, -1), prompt), dim=1)

    def _tiles(self, rgb, coarse, box, channel_box, margin) -> np.ndarray:
        return self._regions.tiles(rgb, coarse, box, channel_box, margin, self.max_side, self.tile_scale)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Refiner forward: ``N x C x S x S`` normalised input -> ``N x 1 x S x S`` logits of side output 1."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            return self.refiner.forward_logits(x)

    def _refine(self, x: torch.Tensor) -> list[np.ndarray]:
        """Refiner forward -> per-sample soft masks at the original size, min-max normalised, float32."""
        return list(soft_masks(self._logits(x), self.original_size).cpu().numpy().astype(np.float32))


def stage1_predict(stage, boxes: np.ndarray, clicks: Optional[list]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``stage.predict`` for ``N x 4`` checked boxes and their checked clicks (:func:`validate_clicks`: None, or
    per box None or ``(K x 2 points, K labels)``), in the shared stage interface's layout. A stage called
    without clicks is called as before clicks existed, so a stage of one's own that takes none still runs."""
    if clicks is None:
        return stage.predict(boxes)
    if "points" not in inspect.signature(stage.predict).parameters:
        raise IS5NetError(f"stage 1 ({type(stage).__name__}) takes no clicks: give the box alone")
    points = [None if c is None else c[0] for c in clicks]
    labels = [None if c is None else c[1] for c in clicks]
    return stage.predict(boxes, points=points, point_labels=labels)


def _check_region(region: str, margin: float, max_side: int, tile_scale: float = DEFAULT_TILE_SCALE) -> None:
    if region not in REGIONS:
        raise IS5NetError(f"region {region!r}: choose one of {', '.join(REGIONS)}")
    if not (isinstance(margin, (int, float)) and 0 <= margin <= 10):
        raise IS5NetError(f"margin {margin!r}: expected a number from 0 to 10 (a fraction of the box's side)")
    if not (isinstance(max_side, int) and 64 <= max_side <= 32768):
        raise IS5NetError(f"max_side {max_side!r}: expected a whole number of pixels from 64 to 32768")
    low, high = TILE_SCALE_RANGE
    if not (isinstance(tile_scale, (int, float)) and not isinstance(tile_scale, bool) and low <= tile_scale <= high):
        raise IS5NetError(f"tile_scale {tile_scale!r}: expected a number from {low:g} to {high:g}")


# ------------------------------------------------------------------------------- built from options
@dataclass(frozen=True)
class PredictorOptions:
    """Every setting of :class:`IS5NetPredictor` besides its models, as data (see its docstring)."""

    device: Optional[str] = None
    precision: str = "fp32"
    backend: str = "torch"
    mask_choice: str = "first"
    box_channel: str = "user"
    batch_size: int = 8
    sam_resize: str = "pil"
    region: Optional[str] = None
    margin: float = DEFAULT_MARGIN
    max_side: int = DEFAULT_MAX_SIDE
    tile_scale: Optional[float] = None
    fast: bool = True
    calibration: object = None  # int8 only: an is5net.inference.quantize.Calibration

    @classmethod
    def from_args(cls, args, **overrides) -> "PredictorOptions":
        """The options a command's arguments give; those it does not declare (or leaves None) keep their defaults."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        return cls(**{**given, **overrides})


def build_predictor(refiner: nn.Module, stage1=None, options: PredictorOptions = PredictorOptions()) -> IS5NetPredictor:
    """The one way a command builds a predictor: a refiner, a stage-1 choice or a ready stage, the options.

    ``stage1``: a :class:`~is5net.inference.stage1.Stage1` (built here, on the predictor's device), a ready
    stage or SAM model, or None (coarse masks given with each box, or a 3-channel IS-Net).
    """
    device = resolve_device(options.device)
    if isinstance(stage1, Stage1):
        stage1 = stage1.build(device, options.mask_choice, options.sam_resize, options.backend, options.precision)
    return IS5NetPredictor(stage1, refiner, **{**asdict(options), "device": device})
