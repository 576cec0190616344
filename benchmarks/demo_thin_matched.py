"""Thin recall at matched over-coverage, on DIS-VD: each network's map binarised at the threshold with the
most thin recall whose ``extra`` (predicted pixels outside the GT per GT pixel) is no more than the other
network's at 0.5.

Thin recall at 0.5 rewards a map that over-covers (``is5net.eval.thin``); this asks how much thin structure
IS5Net finds when it may cover as much outside the GT as IS-Net does. It reads the predictions
``benchmarks/demo_sweep.py`` wrote and trains nothing:

    python benchmarks/demo_thin_matched.py /tmp/demo_sweep/A-s0 is5net /tmp/demo_sweep/B-s0 isnet

Both folders must hold the same seed's data (the first one's DIS-VD GT is used). Thresholds are tried every
4 grey levels.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _stats(preds, gts, thins, level: int) -> tuple[float, float]:
    found = sum(int(((p > level) & t).sum()) for p, t in zip(preds, thins))
    extra = sum(int(((p > level) & ~g).sum()) for p, g in zip(preds, gts))
    return found / max(1, sum(int(t.sum()) for t in thins)), extra / max(1, sum(int(g.sum()) for g in gts))


def _matched(preds, gts, thins, cap: float) -> tuple[int, float, float]:
    """The grey level (a multiple of 4 plus 3, or 127) with the most thin recall whose extra is <= ``cap``."""
    best = None
    for level in sorted({127, *range(3, 255, 4)}):
        r, e = _stats(preds, gts, thins, level)
        if e <= cap and (best is None or r > best[1]):
            best = (level, r, e)
    return best if best is not None else (255, 0.0, 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("is5net_run", type=Path)
    ap.add_argument("is5net_method")
    ap.add_argument("isnet_run", type=Path)
    ap.add_argument("isnet_method")
    args = ap.parse_args(argv)

    from is5net.eval.thin import thin_parts
    from is5net.io import load_mask

    gt_paths = sorted((args.is5net_run / "data" / "DIS-VD" / "gt").glob("*.png"))
    gts = [load_mask(p) > 127 for p in gt_paths]
    thins = [thin_parts(g, 3) for g in gts]

    def preds(run: Path, method: str):
        return [load_mask(run / "eval" / method / "predictions" / "DIS-VD" / p.name) for p in gt_paths]

    theirs = preds(args.isnet_run, args.isnet_method)
    ours = preds(args.is5net_run, args.is5net_method)
    ref_recall, ref_extra = _stats(theirs, gts, thins, 127)
    recall, extra = _stats(ours, gts, thins, 127)
    print(f"IS-Net at 0.50: thin recall {ref_recall:.3f}  extra {ref_extra:.3f}")
    print(f"IS5Net at 0.50: thin recall {recall:.3f}  extra {extra:.3f}")
    for name, maps, cap in (("IS5Net", ours, ref_extra), ("IS-Net", theirs, extra)):
        level, r, e = _matched(maps, gts, thins, cap)
        print(f"{name} at {level / 255:.2f}: thin recall {r:.3f}  extra {e:.3f} (the other's extra at 0.5: {cap:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
