"""The machinery of ``is5net predict`` over folders: finding the images, the journal, decoding ahead, sharding.

* :func:`discover` turns the command line's files, folders and glob patterns into :class:`Item` s, each with
  the path its outputs take under ``-o`` (the input tree, mirrored).
* :class:`Journal` is ``-o/index.jsonl``: one JSON line per finished image, appended with one ``write`` after
  the image's files are in place, so a line names only outputs that exist whole. A run killed at any moment
  leaves at worst a torn last line, which the next run drops (and redoes that image). Under torchrun each
  process appends to its own ``index.part-<rank>.jsonl``; rank 0 merges them into ``index.jsonl`` at the end
  (and at the start of the next run, when a killed run left parts behind).
* :func:`decode_ahead` reads the next images in a background thread while the model runs on this one.
* :func:`gather` collects every process's list on every process (failures for the closing summary).

Nothing here imports torch at module level (``gather`` does, when a process group is active).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import IS5NetError
from .io import IMAGE_EXTENSIONS, atomic_write_bytes, atomic_write_text, open_append

log = logging.getLogger("is5net")

INDEX_JSONL = "index.jsonl"
INDEX_JSON = "index.json"
_PART = "index.part-{rank}.jsonl"
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Item:
    """One image to segment: ``path`` as found, ``rel`` its path under the root it was found in.

    ``rel`` (POSIX, with the image's extension) is the image's key in the journal and, without its suffix,
    where its outputs go under ``-o``: ``photos/a/b.jpg`` found in ``photos`` writes ``OUT/a/b.png``.
    A file named on the command line has ``rel`` = its name (outputs flat in ``-o``, as always).
    """

    path: Path
    rel: PurePosixPath

    @property
    def out_stem(self) -> PurePosixPath:
        return self.rel.with_suffix("")


@dataclass
class Discovery:
    items: list[Item]
    batch: bool  # some input was a folder or a glob pattern: journal, resume, mirrored tree
    named: list[Path]  # the files named one by one (checked up front, as before folders existed)


def listed_outputs(out_dir: Path) -> set[Path]:
    """The files earlier runs wrote into ``out_dir``, as its journal and index list them (resolved paths)."""
    names: list[str] = []
    for entry in _read_lines(out_dir / INDEX_JSONL)[0]:
        names += [n for n in entry.get("outputs") or [] if isinstance(n, str)]
    for part in out_dir.glob(_PART.format(rank="*")):
        for entry in _read_lines(part)[0]:
            names += [n for n in entry.get("outputs") or [] if isinstance(n, str)]
    try:
        listed = json.loads((out_dir / INDEX_JSON).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        listed = []
    if isinstance(listed, list):
        names += [e["file"] for e in listed if isinstance(e, dict) and isinstance(e.get("file"), str)]
    cut = [(out_dir / n) for n in names]
    return {p.resolve() for p in cut}


def is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _glob_root(pattern: str) -> Path:
    """The folder a pattern's matches are relative to: its leading components without a glob character."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def discover(
    inputs: Iterable[os.PathLike | str], recursive: bool = False, exclude: Optional[os.PathLike | str] = None
) -> Discovery:
    """The images named by ``inputs``: files as given, folders' image files (with ``recursive``, also those
    of their subfolders), and the image files a glob pattern matches (``**`` crosses folders with
    ``recursive``). Sorted within each input, duplicates dropped (first kept).

    A folder with no image, or a pattern matching none, is an :class:`IS5NetError` (a usage mistake). A
    path that does not exist and is no pattern is kept as a named file, for the caller's file check to name.
    ``exclude`` is the output folder: a rerun must not take the last run's masks for photos, so the outputs
    its journal lists are left out, and so is all of it when it lies inside an input folder. An output folder
    that holds the inputs (``-o`` their parent, ``-o .``) keeps them: only the listed outputs are dropped.
    """
    out = Path(exclude).resolve() if exclude is not None else None
    listed = listed_outputs(out) if out is not None else set()
    items: list[Item] = []
    named: list[Path] = []
    batch = False
    seen: set[Path] = set()
    for given in inputs:
        text = str(given)
        path = Path(text)
        if path.is_dir() or (not path.exists() and is_glob(text)):
            batch = True
            root, files = _found_under(path, text, recursive, out, listed)
            for p in files:
                if p.resolve() not in seen:
                    seen.add(p.resolve())
                    items.append(Item(p, PurePosixPath(p.relative_to(root).as_posix())))
        else:
            named.append(path)
            if path.resolve() not in seen:
                seen.add(path.resolve())
                items.append(Item(path, PurePosixPath(path.name)))
    return Discovery(items, batch, named)


def _found_under(path: Path, text: str, recursive: bool, out: Optional[Path], listed: set[Path]):
    """``(root, image files)`` of a folder or a pattern, sorted; none is a usage mistake."""
    root = path if path.is_dir() else _glob_root(text)
    inside = out is not None and root.resolve() in out.parents  # the output folder is a subfolder of the input

    def wanted(p: Path) -> bool:
        resolved = p.resolve()
        return (
            p.is_file()
            and _is_image_name(p)
            and resolved not in listed
            and not (inside and (out == resolved or out in resolved.parents))
        )

    if path.is_dir():
        files = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if wanted(p))
        if not files:
            more = "" if recursive else " (add --recursive for its subfolders)"
            raise IS5NetError(f"{path}: no image files in this folder{more}")
        return root, files
    files = [p for p in sorted(Path(m) for m in glob.glob(text, recursive=recursive)) if wanted(p)]
    if not files:
        raise IS5NetError(
            f"{text}: no image file matches this pattern"
            + ("" if recursive or "**" not in text else " (** needs --recursive)")
        )
    return root, files


def output_collisions(jobs: list["Job"]) -> Optional[str]:
    """A message when two images would write the same file, else None.

    Every output path of the run, not only the stems: ``a.jpg`` and ``a.png`` both write ``a.png``, and so do
    ``a.jpg``'s cut-out and ``a_cutout.jpg``'s mask (``--save both``), or ``a.jpg``'s first of two boxes and
    ``a_0.jpg``. One would overwrite the other's output and the journal would list it twice.
    """
    owner: dict[str, Job] = {}
    for job in jobs:
        for name in job.outputs:
            other = owner.setdefault(name, job)
            if other is not job:
                return (
                    f"{other.item.path} and {job.item.path} would write the same outputs ({name}); "
                    f"rename one or run them separately"
                )
    return None


# --- the journal -------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> tuple[list[dict], int]:
    """The entries of a journal file, and how many lines were dropped (torn by a kill, or not entries)."""
    entries, dropped = [], 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            dropped += 1
            continue
        if isinstance(entry, dict) and isinstance(entry.get("input"), str):
            entries.append(entry)
        else:
            dropped += 1
    return entries, dropped


class Journal:
    """``OUT/index.jsonl``: what is done. See the module's docstring for how it survives a kill."""

    def __init__(self, out_dir: Path, rank: int = 0, world_size: int = 1):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / INDEX_JSONL
        self.own = self.path if world_size == 1 else self.out_dir / _PART.format(rank=rank)

    def parts(self) -> list[Path]:
        return sorted(self.out_dir.glob(_PART.format(rank="*")))

    def entries(self) -> tuple[dict[str, dict], int]:
        """The latest entry per input (the merged index first, then any parts a killed torchrun run left),
        and the number of torn or foreign lines dropped."""
        latest: dict[str, dict] = {}
        dropped = 0
        for path in [self.path, *self.parts()]:
            found, bad = _read_lines(path)
            dropped += bad
            for entry in found:
                latest.pop(entry["input"], None)  # re-insert: a redone image moves to where it was redone
                latest[entry["input"]] = entry
        return latest, dropped

    def compact(self, order: list[str]) -> list[dict]:
        """Rewrite ``index.jsonl`` atomically as one line per input, in ``order`` (inputs of earlier runs
        that are not in ``order`` stay, after them), then delete the parts; returns the entries written.

        Run by one process only (rank 0). Killed half-way it leaves the old index and the parts, which
        the next compaction merges again to the same result.
        """
        latest, _ = self.entries()
        rank = {name: i for i, name in enumerate(order)}
        ordered = sorted(latest.values(), key=lambda e: rank.get(e["input"], len(rank)))
        if ordered or self.path.exists():
            try:
                atomic_write_text(self.path, "".join(_line(e) for e in ordered))
            except OSError as exc:
                raise WriteFailed(self.path, exc) from None
        for part in self.parts():
            part.unlink(missing_ok=True)
        return ordered

    def append(self, entry: dict) -> None:
        """Add one line with a single ``write`` on an ``O_APPEND`` descriptor: a kill leaves the line whole or
        torn at the end of the file (dropped by the next reader), never interleaved with another."""
        data = _line(entry).encode("utf-8")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open_append(self.own, binary=True, readable=True) as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            if size and not _ends_with_newline(fd, size):
                data = b"\n" + data  # after a torn line: start a fresh one rather than extend the torn one
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            except OSError as exc:
                # A full disk or a file size limit: take the part that was written back out, so the journal
                # stays whole lines (a kill here still leaves at worst one torn line, dropped when read).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise WriteFailed(self.own, exc) from None


def _ends_with_newline(fd: int, size: int) -> bool:
    return os.pread(fd, 1, size - 1) == b"\n"


class WriteFailed(IS5NetError):
    """A file of the run could not be written (a full disk, a file size limit): the run stops there, keeping
    what it finished. The message names the file."""

    def __init__(self, path, exc: OSError):
        super().__init__(f"{path}: cannot write it ({exc.strerror or exc})")


def _line(entry: dict) -> str:
    return json.dumps(entry, separators=(",", ":")) + "\n"


def is_done(entry: Optional[dict], outputs: list[str], out_dir: Path, **same) -> bool:
    """Whether a journal entry records exactly ``outputs`` (paths under ``out_dir``), they all exist, and
    its fields named in ``same`` have those values.

    A rerun with other output options (``--save``, another number of boxes) names other files, so the image
    is redone; so is one whose ``same`` fields differ (``combine``: union and labels write the same name);
    a deleted output is rewritten.
    """
    if entry is None or sorted(entry.get("outputs") or []) != sorted(outputs):
        return False
    if any(entry.get(key) != value for key, value in same.items()):
        return False
    return all((out_dir / name).is_file() for name in outputs)


_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # is5net.io.atomic_path's ".<name>.<8 hex>.tmp"


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete the temporaries a killed run left under ``out_dir`` (a file being written when the process
    died: never renamed, so never an output); returns how many. Only before any process of this run writes."""
    removed = 0
    if not Path(out_dir).is_dir():
        return 0
    for folder, _dirs, files in os.walk(out_dir):
        for name in files:
            if _TEMPORARY.match(name):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


# --- decoding ahead ----------------------------------------------------------------------------------------


_END = object()


def decode_ahead(items: list[Any], load: Callable[[Any], Any], depth: int = 2) -> Iterator[tuple[Any, Any, Any]]:
    """Yield ``(item, load(item), None)`` or ``(item, None, exception)`` for each item, in order.

    With ``depth > 0`` a background thread runs ``load`` up to ``depth`` items ahead of the consumer, so
    decoding the next photo (Pillow releases the GIL while it decodes) overlaps the model's work on this
    one; ``depth == 0`` loads in the caller's thread. Only :class:`Exception` s are handed over as results;
    anything else ends the thread and is raised in the consumer. Closing the generator (a ``break``, an
    exception in the consumer, Ctrl-C) stops the thread after at most the item it is loading.
    """
    if depth <= 0:
        for item in items:
            try:
                value = (item, load(item), None)
            except Exception as exc:
                value = (item, None, exc)
            yield value
        return
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                try:
                    value = (item, load(item), None)
                except Exception as exc:  # one bad image: its error goes to the consumer, the rest go on
                    value = (item, None, exc)
                if not put(value):
                    return
            put(_END)
        except BaseException as exc:  # noqa: B036 - handed to the consumer, which raises it
            put((_END, exc))

    thread = threading.Thread(target=work, name="is5net-decode", daemon=True)
    thread.start()
    try:
        while True:
            try:
                value = results.get(timeout=0.1)  # a timeout keeps the wait interruptible by Ctrl-C
            except queue.Empty:
                continue
            if value is _END:
                return
            if value[0] is _END:
                raise value[1]
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


# --- many processes ----------------------------------------------------------------------------------------


def gather(group, values: list) -> list:
    """Every process's ``values``, concatenated in rank order, on every process (a copy when alone)."""
    if not getattr(group, "active", False):
        return list(values)
    import torch.distributed as dist

    every: list = [None] * group.world_size
    dist.all_gather_object(every, list(values))
    return [v for part in every for v in part]


# --- a run over many images, as one object -----------------------------------------------------------------


@dataclass
class Job:
    """One image of a run: where it is, its boxes, per output the files it writes (kind -> path), and each
    box's clicks (``(points, point_labels)`` or None; None for the whole job when no box has any)."""

    item: Item
    boxes: list
    names: list[dict[str, str]]
    clicks: Optional[list] = None

    @property
    def outputs(self) -> list[str]:
        return [n for per_output in self.names for n in per_output.values()]


@dataclass
class Outcome:
    """What a run did, summed over its processes (``failed`` names every process's failed images)."""

    total: int  # images in the run
    skipped: int  # already done by an earlier run (the journal said so)
    images: int  # images whose files were written by this run
    boxes: int  # boxes segmented in them
    failed: list[str]
    journaled: bool  # a batch: index.jsonl was kept
    rank: int = 0
    world_size: int = 1
    write_error: Optional[str] = None  # the file that could not be written, where the run stopped


def commit_files(out_dir: Path, files: list[tuple[str, bytes]]) -> None:
    """Write one image's files, each atomically; if one cannot be written, the image's others are removed
    too, so an image has all of its outputs or none."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for fname, data in files:
            try:
                atomic_write_bytes(out_dir / fname, data)
            except OSError as exc:
                raise WriteFailed(out_dir / fname, exc) from None
            written.append(out_dir / fname)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def per_box_entries(entry: dict) -> list[dict]:
    """An image's ``index.jsonl`` line as ``index.json`` entries: one per box (file, image, box, SAM score,
    stage 1, COCO RLE; ``label`` with ``--combine labels``)."""
    out = []
    files, boxes = entry.get("files") or [], entry.get("boxes") or []
    scores, rles = entry.get("scores") or [None] * len(boxes), entry.get("rle") or [None] * len(boxes)
    for k, (names, box, score, rle) in enumerate(zip(files, boxes, scores, rles)):
        e = {
            "file": next(iter(names.values())),
            "image": entry.get("image"),
            "box": box,
            "sam_score": score,
            "coarse": entry.get("coarse"),
            "rle": rle,
        }
        if entry.get("points") and entry["points"][k] is not None:  # the box's clicks, as they prompted stage 1
            e["points"], e["point_labels"] = entry["points"][k], entry["point_labels"][k]
        if entry.get("combine") == "labels":
            e["label"] = k + 1
        out.append(e)
    return out


class BatchRun:
    """Many images through one ``work(job, payload) -> (files, journal entry)``, nothing lost on a failure or a kill.

    Each image's files are committed as it finishes (:func:`commit_files`). With ``journaled`` (a folder, a
    pattern, or several processes) each finished image is also a line of ``index.jsonl`` (:class:`Journal`), a
    rerun skips what is done (``overwrite`` redoes it; ``same``: entry fields that must match, see
    :func:`is_done`) and under torchrun (``group``) the images are sharded over the processes. Otherwise the
    entries go to ``index.json``. ``read(job)`` runs ``prefetch`` images ahead in a thread
    (:func:`decode_ahead`). A failing image (an :class:`IS5NetError` or an ``OSError``) is one line on stderr
    and the run goes on; :meth:`run` returns the :class:`Outcome`.
    """

    def __init__(self, out_dir: Path, jobs: list[Job], journaled: bool, group=None, overwrite: bool = False,
                 prefetch: int = 2, progress: bool = True, same: Optional[dict] = None, name: str = "predict"):  # fmt: skip
        self.out_dir, self.jobs, self.group = Path(out_dir), jobs, group
        self.rank, self.world = (group.rank, group.world_size) if group is not None else (0, 1)
        self.journal = Journal(self.out_dir, self.rank, self.world) if journaled else None
        self.overwrite, self.prefetch, self.progress, self.same, self.name = overwrite, prefetch, progress, same, name
        self.index: list[dict] = []  # without a journal: the index.json entries

    def run(self, read: Callable[[Job], Any], work: Callable[[Job, Any], tuple[list, dict]]) -> Outcome:
        refuse_links(self.out_dir)
        mine, skipped = self._todo()
        outcome = Outcome(len(self.jobs), skipped, 0, 0, [], self.journal is not None, self.rank, self.world)
        created = not self.out_dir.exists()
        try:
            self._loop(mine, read, work, outcome)
        except WriteFailed as exc:  # a full disk: the next image would fail the same way
            outcome.write_error = str(exc)
        finally:
            if self.journal is None:  # also on Ctrl-C or an unexpected error: what was written is listed
                self._write_index(created, outcome)
        if self.group is not None:
            outcome.failed = gather(self.group, outcome.failed)
            outcome.boxes, outcome.images = self.group.sum([outcome.boxes, outcome.images])
            self.group.barrier()  # every part is complete before rank 0 merges them
        if self.journal is not None and self.rank == 0:
            self._merge_journal(outcome)
        if self.group is not None:
            self.group.barrier()
        return outcome

    def _merge_journal(self, outcome: Outcome) -> None:
        """index.jsonl compacted and index.json written, each atomically: on a full disk the journal stays as
        the run left it (whole lines), which the next run reads."""
        try:
            entries = self.journal.compact([str(job.item.rel) for job in self.jobs])
            if entries:
                listed = [e for entry in entries for e in per_box_entries(entry)]
                _write_listing(self.out_dir / INDEX_JSON, listed)
        except WriteFailed as exc:
            outcome.write_error = outcome.write_error or str(exc)

    def _todo(self) -> tuple[list[Job], int]:
        """This process's jobs (what the journal does not list as done, sharded) and how many were skipped."""
        if self.journal is None:
            return self.jobs, 0
        todo = self._not_done() if self.rank == 0 else None
        todo = self.group.broadcast(todo) if self.group is not None else todo
        skipped = len(self.jobs) - len(todo)
        if skipped and self.rank == 0:
            log.info(
                "%d of %d image(s) already done (listed in %s); --overwrite redoes them",
                skipped,
                len(self.jobs),
                self.journal.path,
            )
        return [self.jobs[i] for i in todo[self.rank :: self.world]], skipped

    def _not_done(self) -> list[int]:
        """Rank 0, before anyone writes: clear what a killed run left, merge the journal, list what is to do."""
        stale = remove_stale_temporaries(self.out_dir)
        if stale:
            log.info("%s: removed %d unfinished temporary file(s) a killed run left", self.out_dir, stale)
        latest, dropped = self.journal.entries()
        if dropped:
            log.info(
                "%s: dropped %d torn line(s) a killed run left; their images are redone", self.journal.path, dropped
            )
        if latest or self.journal.parts():
            self.journal.compact([str(job.item.rel) for job in self.jobs])
        same = self.same or {}
        return [
            i
            for i, job in enumerate(self.jobs)
            if self.overwrite or not is_done(latest.get(str(job.item.rel)), job.outputs, self.out_dir, **same)
        ]

    def _loop(self, mine: list[Job], read, work, outcome: Outcome) -> None:
        from tqdm import tqdm

        desc = self.name if self.world == 1 else f"{self.name} (rank 0 of {self.world})"
        quiet = not self.progress or self.rank != 0
        with tqdm(total=len(mine), desc=desc, unit="image", file=sys.stderr, disable=True if quiet else None) as bar:
            for job, payload, error in decode_ahead(mine, read, depth=self.prefetch):
                try:
                    if error is not None:
                        raise error
                    files, entry = work(job, payload)
                except (IS5NetError, OSError) as exc:
                    image = str(job.item.path)
                    message = str(exc) if image in str(exc) else f"{image}: {exc}"
                    tqdm.write(f"is5net {self.name}: error: {message}", file=sys.stderr)
                    outcome.failed.append(image)
                    bar.update(1)
                    continue
                commit_files(self.out_dir, files)
                entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                if self.journal is not None:
                    self.journal.append(entry)
                else:
                    self.index.extend(per_box_entries(entry))
                outcome.boxes += len(entry["boxes"])
                outcome.images += 1
                bar.update(1)

    def _write_index(self, created: bool, outcome: Outcome) -> None:
        try:
            if self.index:
                _write_listing(self.out_dir / INDEX_JSON, self.index)
            elif created and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()  # made for this run, and nothing came of it
        except WriteFailed as exc:
            outcome.write_error = outcome.write_error or str(exc)


def _write_listing(path: Path, entries: list[dict]) -> None:
    try:
        atomic_write_text(path, json.dumps(entries, indent=2))
    except OSError as exc:
        raise WriteFailed(path, exc) from None


def refuse_links(out_dir: Path) -> None:
    """The journal, its parts and the index are this project's own records: a link among them is refused
    (appending through it would write into some other file)."""
    out_dir = Path(out_dir)
    for path in [out_dir / INDEX_JSONL, out_dir / INDEX_JSON, *sorted(out_dir.glob(_PART.format(rank="*")))]:
        if path.is_symlink():
            raise IS5NetError(
                f"{path} is a symbolic link; is5net keeps its own records there and does not follow links: "
                "remove the link (or choose another -o)"
            )
