"""The import rules of docs/architecture.md: layers, bottom to top, and nothing imports upward.

Every ``import`` counts, also those inside functions (they run, just later). A
package may import its own layer and the layers below it; the package graph has
no circle; the library never imports the top-level ``components`` or
``pipelines`` (they wrap it), except the CLI, which runs the pipelines.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "daetalker"

# Bottom to top. A name is a sub-package or a top-level module of daetalker.
LAYERS: list[set[str]] = [
    {"__init__", "errors", "hashing", "timebase", "config", "profiles", "diffusion", "outputs", "error_boundary",
     "checkpoint", "assets", "services", "versioning", "tracking"},
    {"models"},
    {"data", "features", "face", "synth"},
    {"train"},
    {"bundle"},
    {"generate"},
    {"evaluate"},
    {"registry"},
    {"stages", "kubeflow", "serve"},
    {"cli"},
]
TOP_LEVEL = {"components", "pipelines"}  # the repository's own packages above the library


def package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> set[str]:
    """Names this file imports: daetalker's packages and the top-level ones."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "daetalker":  # a sub-package or module, else a name of daetalker/__init__.py
                real = len(parts) > 1 and ((SRC / parts[1]).is_dir() or (SRC / f"{parts[1]}.py").is_file())
                found.add(parts[1] if real else "__init__")
            elif parts[0] in TOP_LEVEL:
                found.add(parts[0])
    return found


def layer_of(package: str) -> int:
    for i, names in enumerate(LAYERS):
        if package in names:
            return i
    raise AssertionError(f"daetalker.{package} is in no layer of docs/architecture.md: add it to LAYERS and the doc")


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        pkg = package_of(path)
        graph[pkg] |= {p for p in imports(path) if p != pkg}
    return graph


def test_every_package_has_a_layer() -> None:
    for pkg in package_graph():
        layer_of(pkg)


def test_nothing_imports_upward() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        pkg = package_of(path)
        for target in sorted(imports(path) - {pkg}):
            if target in TOP_LEVEL:
                if pkg != "cli":
                    bad.append(f"{path.relative_to(ROOT)} imports {target}/ (the top level wraps the library)")
            elif layer_of(target) > layer_of(pkg):
                bad.append(f"{path.relative_to(ROOT)} ({pkg}, layer {layer_of(pkg)}) imports daetalker.{target} "
                           f"(layer {layer_of(target)})")
    assert not bad, "\n".join(bad)


def test_the_package_graph_has_no_circle() -> None:
    graph = {k: {t for t in v if t not in TOP_LEVEL} for k, v in package_graph().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The check is not vacuous: a models module importing the trainer is named."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from daetalker.train.dae_trainer import train_dae\n")
    assert imports(probe) == {"train"} and layer_of("train") > layer_of("models")
