"""Layer rules of the project, read from the source (nothing is imported or executed).

flows -> tasks -> stablerep; tasks never import flows, and flows take the writer lease only through
a task. Inside the core, lower floors never reach up: evaluation and synthesis never import
training, data never imports models; models, losses and data never import the procedural world
(they take a label space as an argument); neither a core module nor the stages import the
experiments (the demo and the other recipes sit above them). And no module imports itself back
through others: the import graph has no cycle.
Imports inside functions count as much as those at the top of a module.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stablerep"
LAYERS = ("stablerep", "tasks", "flows")
CORE = ("losses", "models", "data", "shards", "synthesis", "training", "evaluation", "generator")

# (importing package, forbidden targets): a target forbids itself and everything under it.
RULES = [
    ("stablerep", ("prefect", "tasks", "flows")),
    ("stablerep.evaluation", ("stablerep.training",)),
    ("stablerep.synthesis", ("stablerep.training",)),
    ("stablerep.data", ("stablerep.models",)),
    ("stablerep.stages", ("stablerep.experiments",)),
    *[(f"stablerep.{name}", ("stablerep.experiments",)) for name in CORE],
    *[(f"stablerep.{name}", ("stablerep.world",)) for name in ("models", "losses", "data")],
    ("tasks", ("flows",)),
    # the lease module, and the names the shards package re-exports from it
    ("flows", ("stablerep.shards.lease", "stablerep.shards.writer_lease", "stablerep.shards.WriterLease")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved; ``from A import B`` yields A and A.B
    (B may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        source = module_name(path)
        for importer, forbidden in RULES:
            if not within(source, importer):
                continue
            for hit in forbidden:
                targets = sorted(t for t in imported_modules(path) if within(t, hit))
                if targets:  # one line per broken rule, naming the shortest module imported
                    out.append(f"{path.relative_to(ROOT)}: {source} imports {targets[0]} "
                               f"({importer} must not import {hit})")
    return out


def project_files() -> list[Path]:
    return [path for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))]


def test_core_modules_keep_the_layer_rules():
    files = project_files()
    assert len([f for f in files if module_name(f).startswith("stablerep.")]) > 50  # not a stale subset
    assert {module_name(f).split(".")[0] for f in files} == set(LAYERS)
    assert violations(files) == []


def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports. ``from A import B`` is an edge to A.B where that
    is a module, else to A (B is a name A defines or re-exports)."""
    modules = {module_name(path) for path in files}
    graph = {}
    for path in files:
        name = module_name(path)
        edges = set()
        for target in imported_modules(path):
            if target in modules:
                edges.add(target)
            elif target.rpartition(".")[0] in modules:
                edges.add(target.rpartition(".")[0])
        edges.discard(name)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_module_imports_itself_back():
    assert import_cycles(import_graph(project_files())) == []


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "stablerep" / "synthesis").mkdir(parents=True)
    (root / "stablerep" / "__init__.py").write_text("")
    (root / "stablerep" / "synthesis" / "__init__.py").write_text("")
    (root / "stablerep" / "synthesis" / "a.py").write_text("def f():\n    from stablerep.synthesis.b import g\n")
    (root / "stablerep" / "synthesis" / "b.py").write_text("from stablerep.synthesis import a\n")
    (root / "stablerep" / "synthesis" / "c.py").write_text("from stablerep.synthesis.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", root)
    files = sorted((root / "stablerep").rglob("*.py"))
    assert import_cycles(import_graph(files)) == [["stablerep.synthesis.a", "stablerep.synthesis.b"]]


@pytest.mark.parametrize("source, importer_file, expected", [
    ("import prefect", "stablerep/storage.py", "must not import prefect"),
    ("from tasks.training import train_encoder", "stablerep/cli/app.py", "must not import tasks"),
    ("def f():\n    from stablerep.training.checkpoint import latest_checkpoint", "stablerep/evaluation/x.py",
     "must not import stablerep.training"),
    ("from ..training import precision", "stablerep/synthesis/x.py", "must not import stablerep.training"),
    ("from stablerep import training", "stablerep/evaluation/x.py", "must not import stablerep.training"),
    ("from stablerep.models.text import CaptionTokenizer", "stablerep/data/x.py", "must not import stablerep.models"),
    ("from stablerep.experiments.demo import DemoConfig", "stablerep/losses/x.py",
     "must not import stablerep.experiments"),
    ("from stablerep.experiments import plan", "stablerep/stages.py", "must not import stablerep.experiments"),
    ("from . import experiments", "stablerep/training/../x.py", None),
    ("from stablerep.world import caption_targets", "stablerep/data/x.py", "must not import stablerep.world"),
    ("def f():\n    from stablerep import world", "stablerep/models/x.py", "must not import stablerep.world"),
    ("from ..world import ATTRIBUTES", "stablerep/losses/x.py", "must not import stablerep.world"),
    ("from flows.dataset import build_dataset", "tasks/x.py", "must not import flows"),
    ("from stablerep.shards import writer_lease", "flows/x.py", "must not import stablerep.shards.writer_lease"),
    ("from stablerep.shards.lease import writer_lease", "flows/x.py", "must not import stablerep.shards.lease"),
    ("from stablerep.world import ATTRIBUTES", "stablerep/training/x.py", None),
])
def test_each_rule_catches_its_violation(tmp_path, monkeypatch, source, importer_file, expected):
    """The checker finds each kind of forbidden import (top level, in a function, relative)."""
    root = tmp_path / "repo"
    path = (root / importer_file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source + "\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", root)
    found = violations([path])
    if expected is None:
        assert found == []  # a module no rule covers for that import
    else:
        assert len(found) == 1 and expected in found[0], found


def uncommented_function_imports(path: Path) -> list[str]:
    """Project imports inside a function with no comment saying why: none on the import's own
    lines, none on the lines just above it (through the other imports of the same group)."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for function in ast.walk(ast.parse(source, str(path))):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            module = node.module or "" if isinstance(node, ast.ImportFrom) else node.names[0].name
            if not (getattr(node, "level", 0) or module.split(".")[0] in LAYERS):
                continue
            if any("#" in lines[i] for i in range(node.lineno - 1, node.end_lineno)):
                continue
            above = node.lineno - 2
            while above >= 0 and lines[above].strip().startswith(("from ", "import ", ")")):
                above -= 1
            while above >= 0 and not lines[above].strip().startswith("#") and lines[above].startswith(" " * (
                    node.col_offset + 4)):  # the continuation lines of a parenthesised import above
                above -= 1
            if above < 0 or not lines[above].strip().startswith("#"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return sorted(set(found))


def test_every_import_inside_a_function_says_why():
    """A project import deferred into a function costs a reader a question; the comment answers it
    (import cost measured, a cycle avoided, an optional dependency)."""
    assert [hit for path in project_files() for hit in uncommented_function_imports(path)] == []


def test_the_import_comment_check_finds_a_bare_lazy_import(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "stablerep").mkdir(parents=True)
    path = root / "stablerep" / "x.py"
    path.write_text("def f():\n    import json\n    from stablerep.stages import train\n\n\n"
                    "def g():\n    # why: the stages load torch\n    from stablerep.stages import train\n"
                    "    from stablerep import storage\n\n\n"
                    "def h():\n    from stablerep.stages import train  # why\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", root)
    assert uncommented_function_imports(path) == ["stablerep/x.py:3"]
