"""Layer rules of the core package, read from the source (nothing is imported or executed).

flows -> tasks -> stablerep; inside the core, lower floors never reach up: evaluation and
synthesis never import training, data never imports models, and neither a core module nor the stages
import the experiments (the demo and the other recipes sit above them).
Imports inside functions count as much as those at the top of a module.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stablerep"
CORE = ("losses", "models", "data", "shards", "synthesis", "training", "evaluation", "generator")

# (importing package, forbidden targets): a target forbids itself and everything under it.
RULES = [
    ("stablerep", ("prefect", "tasks", "flows")),
    ("stablerep.evaluation", ("stablerep.training",)),
    ("stablerep.synthesis", ("stablerep.training",)),
    ("stablerep.data", ("stablerep.models",)),
    ("stablerep.stages", ("stablerep.experiments",)),
    *[(f"stablerep.{name}", ("stablerep.experiments",)) for name in CORE],
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


def test_core_modules_keep_the_layer_rules():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the whole package is read, not a stale subset
    assert violations(files) == []


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
        assert found == []  # stablerep/x.py is not one of the core packages the experiments rule covers
    else:
        assert len(found) == 1 and expected in found[0], found
