"""Image files in, mask files out: the library behind ``is5net predict``.

:func:`plan_jobs` turns discovered images (:func:`is5net.batch.discover`) and their boxes into the jobs of a
run, every output name decided before any model loads; :class:`ImageSegmenter` reads one job's image (and
its given coarse masks) and turns it into its files and its journal line; :class:`is5net.batch.BatchRun`
drives both over many images. A Python user can drive them the same way::

    found = discover(["photos/"], recursive=True)
    jobs = plan_jobs(found.items, [[10, 10, 200, 200]], None, outputs, is5=True, batch_mode=True)
    segmenter = ImageSegmenter(predictor, outputs)
    outcome = BatchRun(Path("out"), jobs, journaled=True).run(segmenter.read, segmenter.segment)
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from pathlib import Path
from typing import Optional

from .batch import INDEX_JSON, INDEX_JSONL, Item, Job, output_collisions
from .contract import check_mask_size
from .data.coarse import CoarseMaskFolder
from .errors import IS5NetError
from .inference.boxes import boxes_for, clicks_for
from .inference.outputs import OutputOptions, rle_encode
from .io import IMAGE_EXTENSIONS, image_file_problem, load_image, load_mask

log = logging.getLogger("is5net")

NO_BOX = "no box given (use --box x0,y0,x1,y1 or --boxes FILE)"


def check_named_images(named: list[Path]) -> None:
    """The cheap checks of the files named one by one, before any model loads: a typo costs a second, not
    a run. (Images found in folders are read in the run; a bad one there is a failed image, not a mistake.)"""
    problems = [(image, image_file_problem(image)) for image in named]
    problems = [(image, why) for image, why in problems if why is not None]
    if problems:
        image, why = problems[0]
        shown = ", ".join(str(p) for p, _ in problems[1:4])
        more = f" (and {len(problems) - 1} more: {shown})" if len(problems) > 1 else ""
        raise IS5NetError(f"{image}: {why}{more}")
    for image in named:
        if image.suffix.lower() not in IMAGE_EXTENSIONS:
            log.debug("%s: unusual extension; reading it anyway", image)


def plan_jobs(
    items: list[Item],
    cli_boxes: list,
    file_boxes: Optional[dict],
    outputs: OutputOptions,
    is5: bool,
    batch_mode: bool,
    cli_clicks: Optional[list] = None,
    file_clicks: Optional[dict] = None,
) -> list[Job]:
    """One job per image: its boxes (the command line's and the boxes file's), their clicks, its output names.

    ``cli_clicks``: one entry per command-line box, ``file_clicks``: per name one per box of ``file_boxes``
    (``(points, point_labels)`` or None; :func:`is5net.inference.boxes.load_prompts_file`). Outside a batch,
    an IS5Net image without a box is a usage mistake; in a batch it is a failed image.
    """
    if is5 and not cli_boxes and not file_boxes:
        raise IS5NetError(f"{items[0].path}: {NO_BOX}")
    jobs = []
    for item in items:
        boxes = boxes_for(item, cli_boxes, file_boxes)
        if is5 and not boxes and not batch_mode:
            raise IS5NetError(f"{item.path}: {NO_BOX}")
        clicks = clicks_for(item, cli_clicks or [None] * len(cli_boxes), file_clicks) if is5 else []
        clicks = clicks if any(c is not None for c in clicks) else None
        jobs.append(Job(item, boxes, outputs.names(item.out_stem, len(boxes)), clicks))
    return jobs


def check_outputs_are_not_inputs(out_dir: Path, jobs: list[Job]) -> None:
    """Refuse a run whose outputs would overwrite each other or one of its input images (or its index files)."""
    collision = output_collisions(jobs)
    if collision is not None:
        raise IS5NetError(collision)
    inputs = {job.item.path.resolve() for job in jobs}
    for name in [n for job in jobs for n in job.outputs] + [INDEX_JSON, INDEX_JSONL]:
        if (out_dir / name).resolve() in inputs:
            raise IS5NetError(f"{out_dir / name} is an input image; choose another -o")


def require_module(module: str, why: str) -> None:
    """Import ``module`` now (not in the middle of the run), or one line saying what to install."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise IS5NetError(f"{why} needs the package {module} (pip install {module})")
    if module == "pymatting" and spec.submodule_search_locations:
        # pymatting compiles its numba kernels on its first import (about a minute on a laptop, then cached
        # beside the package): say so, rather than look stuck.
        root = Path(next(iter(spec.submodule_search_locations)))
        if not any(root.glob("*/__pycache__/*.nbi")):
            log.info("pymatting: compiling its kernels on first use (a minute or so, once)")
    importlib.import_module(module)


class GivenCoarseMasks:
    """Coarse masks the user made (any stage-1 method): one file for one image, or a folder of masks named
    like the images (``<stem>.png``, or ``<stem>_<k>.png`` per box; the rule of :mod:`is5net.data.coarse`),
    in subfolders that mirror the images'. ``option`` names the source in messages."""

    def __init__(self, source: Path, option: str = "--coarse-mask"):
        self.source, self.option = Path(source), option
        self.folder = CoarseMaskFolder(self.source) if self.source.is_dir() else None

    def check(self, n_images: int) -> None:
        if self.source.is_file():
            if n_images > 1:
                raise IS5NetError(
                    f"{self.option} {self.source} is one file but {n_images} images were given; pass a directory"
                )
        elif not self.source.is_dir():
            raise IS5NetError(f"{self.option} {self.source}: no such file or directory")

    def path(self, item: Item, k: Optional[int]) -> Path:
        """The mask of ``item`` (box ``k`` of several)."""
        if self.folder is None:
            return self.source
        subset = str(item.rel.parent) if str(item.rel.parent) != "." else None
        found = self.folder.find(item.path.stem, subset=subset, box_index=k)
        if found is None:
            raise IS5NetError(
                f"{self.option} {self.source}: no mask for {item.path.name} (expected {item.path.stem}.png)"
            )
        return found

    def load(self, item: Item, n_boxes: int, shape: tuple[int, int], max_pixels: Optional[int]) -> list:
        """One mask per box, each the image's size."""
        multi = n_boxes > 1
        paths = [self.path(item, k if multi else None) for k in range(n_boxes)]
        if multi and len(set(paths)) == 1:
            stem = item.path.stem
            log.warning(
                "%s: one coarse mask (%s) for all %d boxes; name them %s_0.png, %s_1.png, ... for one each",
                *(item.path.name, paths[0].name, n_boxes, stem, stem),
            )
        masks = []
        for path in paths:
            m = load_mask(path, max_pixels=max_pixels)
            check_mask_size(m.shape, shape, f"coarse mask {path.name}")
            masks.append(m)
        return masks


class ImageSegmenter:
    """One job's image -> its output files and journal line, through a ready predictor (nothing written here).

    ``coarse``: the user's coarse masks (None: the predictor's stage 1 makes them); ``stage1``: the name the
    journal records for a stage that ran (``sam``, ``grabcut``).
    """

    def __init__(self, predictor, outputs: OutputOptions, coarse: Optional[GivenCoarseMasks] = None,
                 stage1: Optional[str] = "sam", max_pixels: Optional[int] = None):  # fmt: skip
        self.predictor, self.outputs, self.coarse, self.max_pixels = predictor, outputs, coarse, max_pixels
        self.is5 = predictor.in_ch == 5
        # As the journal has always said: "given" whenever masks were given (an IS-Net ignores them).
        self.stage1 = "given" if coarse is not None else (stage1 if self.is5 else None)

    def read(self, job: Job):
        """Decode the image (and its coarse masks): runs ahead, in the decoding thread."""
        rgb = load_image(job.item.path, max_pixels=self.max_pixels)
        if self.is5 and not job.boxes:
            raise IS5NetError(f"{job.item.path}: no box given for it (--box, or an entry in --boxes FILE)")
        coarse = None
        if self.is5 and self.coarse is not None:
            coarse = self.coarse.load(job.item, len(job.boxes), rgb.shape[:2], self.max_pixels)
        return rgb, coarse

    def segment(self, job: Job, payload) -> tuple[list[tuple[str, bytes]], dict]:
        """One image's output files (path under OUTDIR, PNG bytes) and journal line."""
        rgb, coarse = payload
        t0 = time.perf_counter()
        p = self.predictor
        p.set_image(rgb)
        if self.is5 and job.clicks is not None:
            points, labels = ([None if c is None else c[i] for c in job.clicks] for i in (0, 1))
            preds = p.predict_batch(job.boxes, coarse, points=points, point_labels=labels)
        elif self.is5:
            preds = p.predict_batch(job.boxes, coarse)
        else:
            preds = p.predict_batch(job.boxes) if job.boxes else [p.predict()]
        files, foreground = self.outputs.render(rgb, [pred.mask for pred in preds], job.names)
        entry = {
            "input": str(job.item.rel),
            "image": str(job.item.path),
            "width": int(rgb.shape[1]),
            "height": int(rgb.shape[0]),
            "boxes": [pred.box for pred in preds],
            "scores": [pred.sam_score for pred in preds],
            "coarse": self.stage1,
            "combine": self.outputs.combine,
            "outputs": job.outputs,
            "files": job.names if self.outputs.combine == "separate" else job.names * len(preds),
            "rle": [rle_encode(f) for f in foreground],
            "seconds": round(time.perf_counter() - t0, 4),
        }
        if job.clicks is not None:  # the clicks that prompted stage 1, per box (null for a box without)
            entry["points"] = [pred.points for pred in preds]
            entry["point_labels"] = [pred.point_labels for pred in preds]
        return files, entry
