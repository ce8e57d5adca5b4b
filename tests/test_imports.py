"""The dependency direction, read from the source: no import circle at import time, the model zoo
imports no training or deployment code, and deployment never imports training."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"compressor": ROOT / "compressor", "compressor.models": ROOT / "models", "compressor.deploy": ROOT / "deploy"}
# what deployment may use from the rest of the project: the shared pieces, never the training side (the
# layer-similarity machinery of compressor.hints measures INT8 drift at the hint points)
DEPLOY_MAY_IMPORT = (
    "compressor.deploy",
    "compressor.models",
    "compressor.checkpoint",
    "compressor.data",
    "compressor.detection",
    "compressor.config",
    "compressor.errors",
    "compressor.io",
    "compressor.metrics",
    "compressor.summary",
    "compressor.hints",
    "compressor.device",
)  # fmt: skip  (device: which devices exist, free memory; no training)


def modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([prefix, *parts])] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path], top_level: bool) -> set[str]:
    """Project modules ``name`` imports (at import time only with ``top_level``), with the packages
    whose ``__init__`` each import runs."""
    tree = ast.parse(path.read_text())
    nodes = [n for stmt in tree.body for n in ast.walk(stmt) if not isinstance(stmt, ast.FunctionDef | ast.ClassDef)] if top_level \
        else list(ast.walk(tree))  # fmt: skip
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = (
                ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module
            )
            targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
    found = set()
    for target in targets:
        parts = target.split(".")
        found |= {p for k in range(2, len(parts) + 1) if (p := ".".join(parts[:k])) in known and not name.startswith(p + ".") and p != name}
    return found


@pytest.mark.parametrize("top_level", [True, False], ids=["at-import-time", "lazy-imports-too"])
def test_no_import_circle(top_level):
    """None at import time (a partially initialised module), and none through the imports inside
    functions either: two modules that need each other are one concern split in two."""
    known = modules()
    graph = {m: imports(m, p, known, top_level=top_level) for m, p in known.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import circle: " + " -> ".join([*trail[trail.index(n) :], n])
            if n not in state:
                visit(n, [*trail, n])
        state[m] = 2

    for m in sorted(known):
        if m not in state:
            visit(m, [m])


def test_dependency_direction():
    known = modules()
    for m, path in known.items():
        used = imports(m, path, known, top_level=False)  # lazy imports inside functions count too
        if m.startswith("compressor.models"):
            assert all(u.startswith("compressor.models") for u in used), f"{m} imports {sorted(used)}: the zoo must stand alone"
        elif m.startswith("compressor.deploy"):
            bad = [u for u in used if not u.startswith(DEPLOY_MAY_IMPORT)]
            assert not bad, f"{m} imports {bad}: deployment may use only {DEPLOY_MAY_IMPORT}"


def test_one_backward_call_site():
    """Every training runs on the one loop: ``backward()`` is called in exactly one place."""
    calls = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in modules().values() for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward"]  # fmt: skip
    assert len(calls) == 1 and calls[0].startswith("compressor/train/loop.py:"), calls
