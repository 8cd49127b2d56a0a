"""The package layout of docs/architecture.md, enforced on the source: every import of every module of
``kat_backbones`` (module level and inside functions alike) is read with ``ast``, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kat_backbones"
ROOT = "kat_backbones"

# Layers, bottom up (docs/architecture.md): a module may import modules of its own layer or of the layers below.
LAYER_OF = {
    "kat_backbones.ops": 0,  # the compiled op and its reference
    "kat_backbones.checkpoint": 0,  # the one checkpoint reader
    "kat_backbones.layers": 1,  # nn.Modules
    "kat_backbones.models": 2,  # timm models, the dense backbone, model surgery
    "kat_backbones.convert": 2,  # weight transfer between models
    "kat_backbones.flops": 2,  # FLOP counter (knows the layer types)
    "kat_backbones.mm": 3,  # OpenMMLab glue
    "kat_backbones.registry": 3,  # mmengine's <scope>.registry lookup
    "kat_backbones": 3,  # the package root: imports the library and the glue, never the apps
    "kat_backbones.apps": 4,  # pictures, demo data, measurement and start-up helpers of tools/
}
LAYER_NAMES = {0: "ops/checkpoint", 1: "layers", 2: "models", 3: "OpenMMLab glue", 4: "apps"}
CORE_MAX_LAYER = 2  # ops, checkpoint, layers, models, convert, flops: pure torch + timm
OPENMMLAB = ("mmengine", "mmcv", "mmdet", "mmseg", "mmpretrain")
CHECKPOINT_READER = "kat_backbones.checkpoint"
EXTENSION_MODULES = {"kat_backbones._C"}  # compiled, no source


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" not in path.parts:
            out[_module_name(path)] = (path, ast.parse(path.read_text(), filename=str(path)))
    return out


SOURCES = _sources()
MODULES = set(SOURCES) | EXTENSION_MODULES


def _layer(module: str) -> int | None:
    """The layer of a module: that of the longest LAYER_OF entry it lies in."""
    name = module
    while name:
        if name in LAYER_OF:
            return LAYER_OF[name]
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, tree: ast.Module) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement and ``importlib.import_module('...')`` call, anywhere in
    the file. ``from X import n`` counts as importing ``X.n`` when that is a module of the package, else ``X``."""
    is_package = SOURCES[module][0].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def _internal(name: str) -> str | None:
    """The package module an import refers to (the longest known prefix), None for third-party imports."""
    if name != ROOT and not name.startswith(ROOT + "."):
        return None
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {m: {} for m in SOURCES}
    for module, (_, tree) in SOURCES.items():
        for name, line in _imports(module, tree):
            target = _internal(name)
            if target is not None and target != module and target in SOURCES:
                graph[module].setdefault(target, line)
    return graph


def _where(module: str, line: int) -> str:
    return f"{SOURCES[module][0].relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in SOURCES if _layer(m) is None)
    assert not unplaced, f"modules outside the layer table of docs/architecture.md (add them to both): {unplaced}"


def test_no_import_cycles():
    """No cycle among the package's modules, imports inside functions included (Tarjan's strongly connected
    components)."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    details = [
        " / ".join(f"{a} -> {b} ({_where(a, graph[a][b])})" for a in c for b in graph[a] if b in c) for c in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_nothing_imports_the_package_root():
    """Inside the package, ``import kat_backbones`` (or ``from kat_backbones import <not a module>``) would tie every
    module to the root, which imports the glue."""
    offenders = [
        _where(module, line)
        for module, (_, tree) in SOURCES.items()
        if module != ROOT
        for name, line in _imports(module, tree)
        if _internal(name) == ROOT
    ]
    assert not offenders, f"modules importing the package root: {offenders}"


def test_imports_point_down_the_layers():
    graph = _graph()
    upward = [
        f"{_where(module, line)}: {module} ({LAYER_NAMES[_layer(module)]}) imports {target} "
        f"({LAYER_NAMES[_layer(target)]})"
        for module, targets in graph.items()
        for target, line in targets.items()
        if _layer(module) is not None and _layer(target) is not None and _layer(target) > _layer(module)
    ]
    assert not upward, "imports against the layers of docs/architecture.md:\n" + "\n".join(upward)


@pytest.mark.parametrize("forbidden", OPENMMLAB)
def test_core_does_not_import_openmmlab(forbidden):
    offenders = [
        _where(module, line)
        for module, (_, tree) in SOURCES.items()
        if (_layer(module) or 0) <= CORE_MAX_LAYER
        for name, line in _imports(module, tree)
        if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert not offenders, f"core modules (ops/checkpoint/layers/models/convert/flops) import {forbidden}: {offenders}"


def _reads_checkpoint_files(tree: ast.Module) -> list[int]:
    """Lines calling ``torch.load`` or a safetensors loader (``load_file``, ``load``, ``safe_open``)."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "load"
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("safetensors"):
            if any(alias.name in ("load_file", "load", "safe_open") for alias in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name.startswith("safetensors") for a in node.names):
            lines.append(node.lineno)
    return lines


def test_one_module_reads_checkpoint_files():
    readers = {m: lines for m, (_, tree) in SOURCES.items() if (lines := _reads_checkpoint_files(tree))}
    assert set(readers) == {CHECKPOINT_READER}, (
        f"checkpoint files must be read through {CHECKPOINT_READER} only; found readers: "
        + ", ".join(f"{m} (lines {lines})" for m, lines in readers.items())
    )


def test_layout_checks_can_fail(tmp_path):
    """The checks see what they should: a lazy import inside a function, a relative import, a torch.load."""
    tree = ast.parse(
        "import torch\n"
        "def f():\n"
        "    from ..mm import backbone\n"
        "    return torch.load('x')\n"
    )
    SOURCES["kat_backbones.models._probe"] = (tmp_path / "_probe.py", tree)
    try:
        assert ("kat_backbones.mm.backbone", 3) in _imports("kat_backbones.models._probe", tree)
        assert _reads_checkpoint_files(tree) == [4]
        assert _layer("kat_backbones.models._probe") == 2 and _layer("kat_backbones.mm.backbone") == 3
    finally:
        del SOURCES["kat_backbones.models._probe"]
