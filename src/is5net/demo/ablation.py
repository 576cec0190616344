"""``is5net demo --ablation``: the paper's input ablation (Table 2 / Fig. 5) in miniature.

The refiner is trained with each input set of :data:`ABLATIONS` (two at a time, one thread each) on the main
run's data and schedule (``is5net.demo.miniature``), scored on the held-out split, and written as
``ablation.json``, ``ablation.md`` and the bar chart ``ablation.png``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from ..contract import BOX_CHANNEL, COARSE_CHANNEL
from ..io import atomic_write_text
from .experiment import Experiment, Row, clear
from .figures import ablation_chart
from .miniature import FULL, QUICK
from .tables import metric_table

#: The rows of the paper's input ablation: which prompt channels the refiner sees, and whether its GT-encoder
#: phase (intermediate supervision) runs.
ABLATIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "rgb": ((), True),
    "rgb+box": (("box",), True),
    "rgb+mask": (("mask",), True),
    "rgb+mask+box": (("mask", "box"), True),
    "rgb+mask+box-no-gt-encoder": (("mask", "box"), False),
}
_PROMPT_CHANNELS = {"mask": COARSE_CHANNEL, "box": BOX_CHANNEL}


def _model_name(kept: tuple[str, ...]) -> str:
    off = [n for n in _PROMPT_CHANNELS if n not in kept]
    return "is5net_tiny" if not off else "is5net_tiny_without_" + "_".join(off)


def ablated_model(kept: tuple[str, ...]) -> str:
    """Register (in this process) and name a tiny IS5Net (at the schedule's width) that cannot see the
    prompt channels not in ``kept``.

    How a channel is taken away: the first convolution's weights on it start at zero and their gradient is
    masked to zero, so they stay exactly zero (AdamW with zero gradient and no weight decay moves nothing,
    and the orthogonality penalty's gradient on an all-zero column is zero). Such a network computes
    exactly what the same IS-Net without that input channel computes (the paper's 3- and 4-channel variants),
    so the ablation is faithful; yet the architecture, the initialisation of every other weight, the data
    pipeline (the same 5-channel inputs), the loss, the schedule and the evaluation are those of the full
    model, everything else equal, and the checkpoint is a plain 5-channel IS5Net any tool loads.
    Zeroing the channel in the data instead would not do for the box: the training data draws it from the
    GT's tight box whatever the files say.
    """
    import torch

    from ..modeling.build import MODEL_REGISTRY, TINY_WIDTH
    from ..modeling.isnet import ISNet

    off = [c for name, c in _PROMPT_CHANNELS.items() if name not in kept]
    name = _model_name(kept)
    if off and name not in MODEL_REGISTRY:

        def build(**kw):
            model = ISNet(in_ch=kw.get("in_ch", 5), width=kw.get("width", TINY_WIDTH))
            weight = model.conv_in.weight
            keep = torch.ones_like(weight)
            keep[:, off] = 0.0
            with torch.no_grad():
                weight.mul_(keep)
            weight.register_hook(lambda grad: grad * keep)
            return model

        MODEL_REGISTRY[name] = build
    return name


def _ablation_row(exp: Experiment, row: str) -> Row:
    """IS5Net's training of the main run, with the row's inputs and GT-encoder phase."""
    kept, gt_encoder = ABLATIONS[row]
    more = {"model": _model_name(kept), "gt_encoder": gt_encoder, "feature_loss": gt_encoder}
    if "mask" not in kept:
        # The extra detail weight outside the coarse mask follows the mask the network is given; a row that
        # is not given one trains with the plain detail weighting, as the demo's IS-Net does. Otherwise the
        # loss would tell it, step after step, where a mask it never sees leaves off.
        more["detail_outside_mask"] = 0.0
    return exp.row("is5net", f"ablation/{row}", setup=partial(ablated_model, kept), **more)


def run_ablation(out: Path, seed: int = 0, quick: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Train the refiner with each input set of :data:`ABLATIONS` on the demo's data and schedule, score them
    on the held-out split, write ``ablation.json``, ``ablation.md`` and the bar chart ``ablation.png``."""
    from .simulated_sam import SIMULATED_SAM_LABEL

    exp = Experiment(Path(out), QUICK if quick else FULL, seed, device, progress)
    exp.make_data()
    ckpts = exp.train({row: _ablation_row(exp, row) for row in ABLATIONS}, processes=2, desc="ablation")
    eval_dir = clear(exp.out / "ablation" / "eval")
    view = exp.coarse_view(eval_dir / "coarse_masks")
    runs = {"coarse": dict(method="sam", checkpoint=None, coarse_dir=view)}
    runs.update({row: dict(method="is5net", checkpoint=ckpts[row], coarse_dir=view) for row in ABLATIONS})
    results = exp.score(eval_dir, runs)
    thin = exp.thin_recall(eval_dir, runs)
    rows = {row: {**results[row], "thin_recall": thin[row]["thin_recall"]} for row in runs}
    payload = {row: rows[row] for row in ABLATIONS}
    atomic_write_text(exp.out / "ablation.json", json.dumps(payload, indent=2))
    labels = {"coarse": "coarse mask (reference)", **{row: row for row in ABLATIONS}}
    table = (
        f"Input ablation, held-out split ({results['rgb']['n']} images), seed {seed}; "
        f"coarse = {SIMULATED_SAM_LABEL}\n\n" + metric_table({labels[r]: rows[r] for r in runs})
    )
    seconds = exp.seconds()
    atomic_write_text(
        exp.out / "ablation.md",
        f"<!-- is5net demo --ablation, seed {seed}{', quick' if quick else ''}, {seconds:.0f} s -->\n{table}\n",
    )
    ablation_chart(rows, exp.out / "ablation.png")
    return {"results": payload, "table": table, "seconds": seconds}
