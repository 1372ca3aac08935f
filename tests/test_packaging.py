"""What `pip install .` installs: the core library with its presets, and no top-level `tasks` or
`flows` packages (those run from the repository, where the deployments load them)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # builds a wheel with pip and imports it in a child process

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.name for p in (ROOT / "stablerep" / "presets").glob("*.yaml"))


def build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the build leaves nothing in the checkout; offline."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("stablerep", "tasks", "flows"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("stablerep-*.whl")
    return wheel


def test_wheel_holds_the_core_and_presets_but_no_prefect_layer(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"stablerep", "stablerep-0.1.0.dist-info"}, top
    assert len(PRESETS) >= 6 and {f"stablerep/presets/{p}" for p in PRESETS} <= set(names)
    shipped = "stablerep/assets/procedural-ldm/"
    assert {shipped + f for f in ("model/model_index.json", "model/stablerep_generation.json",
                                  "model/unet/diffusion_pytorch_model.safetensors", "model/tokenizer/tokenizer.json",
                                  "fidelity_classifier.safetensors", "fidelity_classifier.json",
                                  "RECIPE.md")} <= set(names)
    metadata = zipfile.ZipFile(wheel).read("stablerep-0.1.0.dist-info/METADATA").decode()
    prefect = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: prefect")]
    # Prefect comes only with an extra (orchestration; the docker worker with docker), never
    # with the core library.
    assert 'Requires-Dist: prefect<4,>=3.4; extra == "orchestration"' in prefect, prefect
    assert all("; extra == " in line for line in prefect), prefect

    # Installed (unpacked) away from the checkout, a preset name still loads.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from stablerep.config import PRESET_DIR, load_config; r = load_config('tiny_cpu_plus'); "
            "print(PRESET_DIR); print(r.loss.method)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    preset_dir, method = proc.stdout.split()
    assert Path(preset_dir) == site / "stablerep" / "presets" and method == "stablerep_plus"
