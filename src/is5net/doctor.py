"""``is5net doctor``: what this installation can do, and what to do about what it cannot.

Versions, the device and its threads, which refiner backends and optional extras are installed (and which
backend ``--backend auto`` picks), every official weight file under ``IS5NET_HOME`` verified, and one line of
advice per thing missing. Exit status 1 when a weight file fails its check (a corrupt file is a problem; a
missing optional one is only advice), else 0.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import __version__

# extra -> the packages it installs (pyproject.toml's optional-dependencies), checked by name
EXTRAS = {
    "onnx": ("onnx", "onnxruntime", "openvino"),
    "serve": ("fastapi", "uvicorn", "python-multipart"),
    "train": ("tensorboard",),
    "hq-sam": ("segment-anything-hq", "timm"),  # --stage1 hq-sam (docs/stage1.md)
    "sam2": ("sam2", "hydra-core", "iopath"),  # --stage1 sam2
    "dev": ("pytest", "ruff"),
}
CORE = (
    "torch",
    "torchvision",
    "segment-anything",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "scikit-image",
    "safetensors",
    "pysodmetrics",
)


def _version(package: str):
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def cpu_flags() -> list[str]:
    """The CPU features that decide the fast paths (Linux: /proc/cpuinfo; elsewhere unknown, empty)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "amx_int8")
    return [f for f in wanted if f in flags]


def collect(verify: bool = True) -> dict:
    """Everything doctor reports, as plain data (the tests read it; ``is5net doctor`` prints it)."""
    import torch

    from .inference.backends import BACKENDS, backend_versions, resolve_backend
    from .weights import weights_home

    advice: list[str] = []
    problems: list[str] = []
    cuda = torch.cuda.is_available()
    backends = backend_versions()
    if backends.get("openvino") is None:
        advice.append("the refiner runs several times faster on a CPU with OpenVINO: pip install 'is5net[onnx]'")
    extras = {name: {p: _version(p) for p in pkgs} for name, pkgs in EXTRAS.items()}
    advice += _extras_advice(extras)
    home = weights_home()
    files = _weight_files(home, verify, advice, problems)
    known = {f["file"] for f in files if f["file"]}
    others = (
        sorted(str(p) for p in home.glob("*") if p.is_file() and str(p) not in known and not p.name.endswith(".part"))
        if home.is_dir()
        else []
    )
    partial = sorted(str(p) for p in home.glob("*.part")) if home.is_dir() else []
    for p in partial:
        advice.append(f"{p}: an interrupted download; run the same `is5net weights download` again to resume it")
    return {
        "is5net": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: (torch.__version__ if p == "torch" else _version(p)) for p in CORE},  # +cu/+cpu: the build
        "device": _device(torch, cuda),
        "backends": backends,
        "backend_names": list(BACKENDS),
        "auto_backend": {
            "cpu": resolve_backend("auto", torch.device("cpu")),
            "default_device": resolve_backend("auto", torch.device("cuda" if cuda else "cpu")),
        },
        "openvino_cpu": _openvino_cpu() if backends.get("openvino") else None,
        "extras": extras,
        "home": str(home),
        "home_exists": home.is_dir(),
        "weights": files,
        "other_files": others,
        "partial": partial,
        "problems": problems,
        "advice": advice,
    }


def _device(torch, cuda: bool) -> dict:
    return {
        "torch_cuda_build": torch.version.cuda,
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": cpu_flags(),
    }


def _extras_advice(extras: dict) -> list[str]:
    advice = []
    for name, pkgs in extras.items():
        missing = [p for p, v in pkgs.items() if v is None]
        if missing and name != "dev":
            advice.append(f"extra '{name}' incomplete (missing {', '.join(missing)}): pip install 'is5net[{name}]'")
    return advice


def _weight_files(home: Path, verify: bool, advice: list[str], problems: list[str]) -> list[dict]:
    """Each official file: found and checked, or missing; what to do about it goes to ``advice``."""
    from .weights import OFFICIAL, find, verify_file

    files = []
    for entry in OFFICIAL.values():
        path = find(entry, home)
        if path is None:
            how = (
                f"`is5net weights download {entry.name}`"
                if entry.url
                else f"download it from {entry.drive or entry.page} and put it in {home / entry.filename}"
            )
            files.append({"name": entry.name, "file": None, "status": "missing"})
            advice.append(f"{entry.name} ({entry.what}) missing: {how}")
            continue
        verdict = verify_file(entry, path, hash_it=verify)
        files.append(
            {
                "name": entry.name,
                "file": str(path),
                "status": "ok" if verdict.ok else "FAILED",
                "detail": verdict.detail,
            }
        )
        if not verdict.ok:
            problems.append(f"{path}: {verdict.detail}")
            fix = f"`is5net weights download {entry.name}`" if entry.url else f"download it again from {entry.page}"
            advice.append(f"{path.name} fails its check: delete it and {fix}")
    return files


def _openvino_cpu() -> dict:
    """OpenVINO's CPU plug-in: its capabilities and the inference precision it picks by default."""
    try:
        import openvino as ov

        core = ov.Core()
        caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        hint = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
        return {"capabilities": caps, "default_precision": getattr(hint, "get_type_name", lambda: str(hint))()}
    except Exception as exc:  # a broken install is reported, never a traceback
        return {"error": f"{type(exc).__name__}: {exc}"}


# ---------------------------------------------------------------------------------------- the report
def format_report(report: dict) -> str:
    """The report of :func:`collect` as the lines ``is5net doctor`` prints."""
    return "\n".join(
        [
            f"is5net {report['is5net']}, Python {report['python']}, {report['platform']}",
            "packages: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in report["packages"].items()),
            _device_line(report["device"]),
            _backends_line(report),
            *_openvino_lines(report["openvino_cpu"]),
            _extras_line(report["extras"]),
            *_weights_lines(report),
            *_advice_lines(report["advice"]),
        ]
    )


def _device_line(d: dict) -> str:
    if d["cuda"]:
        cuda = ", ".join(d["cuda"])
    elif d["torch_cuda_build"]:
        cuda = f"not available (torch is built for CUDA {d['torch_cuda_build']}, but sees no GPU)"
    else:
        cuda = "not available (a CPU-only torch build)"
    return (
        f"device: CUDA {cuda}; CPU {d['cpu']}, "
        f"{d['usable_cpus']} usable of {d['cpu_count']} cores, torch uses {d['torch_threads']} threads; "
        f"features: {', '.join(d['cpu_flags']) or 'unknown'}"
    )


def _backends_line(report: dict) -> str:
    return (
        "refiner backends: "
        + ", ".join(f"{k} {v or 'not installed'}" for k, v in report["backends"].items())
        + f"; --backend auto picks {report['auto_backend']['cpu']} on the CPU"
        + (f", {report['auto_backend']['default_device']} on CUDA" if report["device"]["cuda"] else "")
    )


def _openvino_lines(ov_cpu: dict) -> list[str]:
    if not ov_cpu:
        return []
    if "error" in ov_cpu:
        return [f"openvino: cannot use the CPU plug-in: {ov_cpu['error']}"]
    return [
        f"openvino on this CPU: {', '.join(ov_cpu['capabilities'])}; by default it computes in "
        f"{ov_cpu['default_precision']} (is5net's default, --precision auto, asks for bf16 where BF16 is listed, "
        "else f32; --precision fp32 always f32)"
    ]


def _extras_line(extras: dict) -> str:
    def state(name: str) -> str:
        missing = [k for k, v in extras[name].items() if v is None]
        return "ok" if not missing else "missing " + ", ".join(missing)

    return "extras: " + "; ".join(f"{name} {state(name)}" for name in extras)


def _weights_lines(report: dict) -> list[str]:
    lines = [f"IS5NET_HOME = {report['home']}" + ("" if report["home_exists"] else " (does not exist yet)")]
    for f in report["weights"]:
        shown = f"{f['status']}: {Path(f['file']).name}: {f['detail']}" if f["file"] else "missing"
        lines.append(f"  {f['name']:<18} " + shown)
    lines += [f"  (other file) {other}" for other in report["other_files"]]
    return lines


def _advice_lines(advice: list[str]) -> list[str]:
    if not advice:
        return ["nothing to do: everything is installed and verified"]
    return ["to do:", *[f"  - {line}" for line in advice]]
