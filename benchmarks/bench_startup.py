"""Start-up cost of the ``is5net`` command: wall time and peak memory of ``is5net --help`` and friends.

    python benchmarks/bench_startup.py            # 5 runs of each command, median wall time
    python benchmarks/bench_startup.py --runs 9

Each command runs in a fresh interpreter, wrapped by a tiny parent that reports its only child's peak RSS
(``getrusage(RUSAGE_CHILDREN)`` is the maximum over the children reaped so far, so one wrapper per run keeps
runs apart). ``python -c "import torch"`` is the plain reference: a command that costs about that much is
importing torch, one that costs a small fraction of it is not. ``python -c pass`` is the floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

# One run: spawn the command, wait, report its wall time and the child's peak RSS (Linux: KiB).
_WRAPPER = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t0
rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "wall_s": wall, "rss_mib": rss_kib / 1024}))
"""

COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    'python -c "import torch" (reference)': [sys.executable, "-c", "import torch"],
    "is5net --help": [sys.executable, "-m", "is5net", "--help"],
    "is5net --version": [sys.executable, "-m", "is5net", "--version"],
    "is5net predict --help": [sys.executable, "-m", "is5net", "predict", "--help"],
    "is5net train --help": [sys.executable, "-m", "is5net", "train", "--help"],
}


def measure(cmd: list[str], runs: int) -> tuple[float, float]:
    """Median wall seconds and largest peak RSS (MiB) of ``runs`` fresh runs of ``cmd``."""
    walls, rss = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout)
        if result["rc"] != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {result['rc']}")
        walls.append(result["wall_s"])
        rss.append(result["rss_mib"])
    return statistics.median(walls), max(rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh runs per command (default 5)")
    args = parser.parse_args()

    rows = {name: measure(cmd, args.runs) for name, cmd in COMMANDS.items()}
    ref_wall, ref_rss = rows['python -c "import torch" (reference)']
    print(f"{'command':38s} {'wall s':>8s} {'peak MiB':>9s} {'wall/torch':>11s} {'MiB/torch':>10s}")
    for name, (wall, rss) in rows.items():
        print(f"{name:38s} {wall:8.3f} {rss:9.1f} {wall / ref_wall:11.2f} {rss / ref_rss:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
