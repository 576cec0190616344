"""The layers of docs/architecture.md: nothing imports upwards, and there is no import cycle in src/."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "is5net"

# Lowest first; a module may import its own layer or any layer below (docs/architecture.md).
LAYERS = [
    ("errors", "interrupts", "io", "runtime", "distributed", "defaults", "modeling", "is5net"),  # is5net: __version__
    ("checkpoint", "contract", "weights", "export"),  # the one rulebook; weight files; the ONNX export
    ("inference",),  # stage 1, boxes, the predictor, regions, runtimes, outputs
    ("data", "eval.metrics", "eval.folders", "eval.report", "eval.scoring", "eval"),
    ("eval.dis5k", "train", "batch", "segment_files"),
    ("serve", "demo", "doctor"),
    ("commands",),  # one file per subcommand: its arguments and a run() over the library
    ("cli", "__main__"),
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "is5net"


def _layer(module: str) -> int:
    best, found = -1, None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > best:
                best, found = len(n), i
    if found is None:
        raise AssertionError(f"{module} is in no layer of docs/architecture.md: add it there and here")
    return found


def _imports(path: Path):
    """(imported module, line, at module level?) for every import of the package's own modules."""
    me = _module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}".strip(".") for a in node.names]
            elif node.module and node.module.startswith("is5net"):
                names = [node.module.removeprefix("is5net").strip(".") or "is5net"]
            else:
                continue
            for name in names:
                yield (name or "is5net"), node.lineno, id(node) in top_level
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("is5net."):
                    yield a.name.removeprefix("is5net."), node.lineno, id(node) in top_level


def _resolve(name: str, modules: set[str]) -> str:
    """``data.pairs`` or, for ``from .data import pairs``-style names, the longest existing prefix."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in modules else "is5net"  # `from . import __version__`: the package itself


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_imports_upwards(module):
    if module in ("is5net", "eval"):  # package inits re-export lazily or from their own level
        return
    mine = _layer(module)
    for name, line, _ in _imports(MODULES[module]):
        target = _resolve(name, set(MODULES))
        assert _layer(target) <= mine, (
            f"{module} (layer {mine}) imports {target} (layer {_layer(target)}) at line {line}: upwards"
        )


def test_no_import_cycle_at_module_level():
    graph = {m: {_resolve(n, set(MODULES)) for n, _, top in _imports(p) if top} - {m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph.get(m, ()):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
