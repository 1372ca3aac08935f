"""The core package never imports Prefect; imports flow flows -> tasks -> stablerep."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_source_never_imports_prefect_tasks_or_flows():
    offenders = {str(p.relative_to(ROOT)): _imports(p) & {"prefect", "tasks", "flows"}
                 for p in (ROOT / "stablerep").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.integration  # imports the core in a child process
def test_importing_the_whole_core_loads_no_prefect():
    modules = sorted({".".join(p.relative_to(ROOT).with_suffix("").parts)
                      for p in (ROOT / "stablerep").rglob("*.py") if p.name != "__main__.py"})
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'prefect'], 'prefect was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
