"""The real stack: `deployments/stack.sh up` (server with basic auth, cpu and gpu process workers,
deployments), a deployment run through the CLI, its state and artifacts through the API, and the UI
in Chromium (signed in)."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.helpers.stack import SignedInChromium, api, stack_credentials
from tests.helpers.stack import descendants as _descendants

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.slow


def running_stack(tmp_path_factory, extra_env: dict[str, str] | None = None):
    """`deployments/stack.sh up` in a fresh directory (``extra_env`` reaches the server and the
    workers, and so every flow run they start); yields what a user of the stack has; `down` after."""
    directory = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = {**os.environ, "PREFECT_PORT": str(port), "STACK_DIR": str(directory),
           "PYTHON_BIN": str(Path(sys.executable).parent), **(extra_env or {})}
    for key in ("PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(key, None)
    up = subprocess.run([str(ROOT / "deployments/stack.sh"), "up"], env=env, capture_output=True, text=True,
                        timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        env.update(PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_HOME=str(directory / "home"),
                   PREFECT_API_AUTH_STRING=stack_credentials(directory))
        yield {"env": env, "api": env["PREFECT_API_URL"], "ui": f"http://127.0.0.1:{port}",
               "auth": env["PREFECT_API_AUTH_STRING"]}
    finally:
        subprocess.run([str(ROOT / "deployments/stack.sh"), "down"], env=env, capture_output=True, timeout=120)
        assert not any((directory / f"{name}.pid").exists() for name in ("server", "worker-cpu", "worker-gpu"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory)


def _api(stack, path, body=None):
    return api(stack["api"], path, body, auth=stack["auth"])


def test_offline_demo_deployment_runs_on_a_worker_and_shows_its_artifacts(stack, tmp_path):
    out = tmp_path / "demo"
    demo = {"captions": 32, "steps": 15, "probe_per_class": 8, "probe_test_per_class": 8, "captions_per_shard": 16,
            "methods": ["stablerep", "clip"], "ceiling": False, "seeds": [0], "images_per_step": 16}
    run = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run",
                          "stablerep-pipeline/offline-demo", "--param", f"out={out}", "--param", f"demo={json.dumps(demo)}",
                          "--watch", "--watch-timeout", "600"], env=stack["env"], capture_output=True, text=True, timeout=700)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)
    flow_run = _api(stack, f"/flow_runs/{flow_run_id}")
    assert flow_run["state"]["type"] == "COMPLETED"
    artifacts = _api(stack, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    keys = {a["key"] for a in artifacts}
    assert {"evaluation", "evaluation-report", "dataset-card", "dataset-stats", "loss-curve-stablerep",
            "training-clip"} <= keys, keys
    progress = [a for a in artifacts if a["type"] == "progress"]
    assert progress and all(a["data"] == 100.0 for a in progress)
    deployed = json.loads((out / "summary.json").read_text())
    assert deployed["linear_probe"].keys() == {"stablerep", "clip", "random_init"}
    # the same settings through `stablerep demo`: the deployment's figures, seed for seed
    cli_out = tmp_path / "cli-demo"
    cli = subprocess.run([str(Path(sys.executable).parent / "stablerep"), "demo", "--out", str(cli_out),
                          *[a for k, v in demo.items() for a in ("--set", f"{k}={json.dumps(v)}")]],
                         capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    by_cli = json.loads((cli_out / "summary.json").read_text())
    assert deployed["per_seed"] == by_cli["per_seed"] and deployed["by_label"] == by_cli["by_label"]

    if CHROMIUM is None:
        pytest.skip("no chromium on this machine: the API checks passed, the UI check needs `apt-get install chromium`")
    SCREENSHOTS.mkdir(exist_ok=True)
    report = next(a for a in artifacts if a["key"] == "evaluation-report")
    with SignedInChromium(CHROMIUM, SCREENSHOTS / "chromium-profile", stack["ui"], stack["auth"]) as browser:
        page = f"{stack['ui']}/artifacts/artifact/{report['id']}"
        # the report's table and its plot under the "Accuracies" heading (tasks/evaluation.py)
        dom = browser.dom_when(page, "Accuracies", "random_init", "data:image/png;base64")
        if "Accuracies" not in dom:  # what the page showed instead, for the failure report
            browser.screenshot(SCREENSHOTS / "ui-evaluation-report-failed.png")
        assert "Accuracies" in dom and "random_init" in dom and "data:image/png;base64" in dom
        shot = SCREENSHOTS / "ui-evaluation-report.png"
        browser.screenshot(shot)
        assert shot.stat().st_size > 20_000
        run_page = browser.dom_when(f"{stack['ui']}/runs/flow-run/{flow_run_id}", "offline-demo", "Completed")
        assert "offline-demo" in run_page and "Completed" in run_page


def test_a_killed_flow_run_is_marked_crashed_and_a_rerun_resumes(stack, tmp_path):
    import signal
    import time

    from stablerep.shards import read_manifest, verify_dataset
    from stablerep.synthesis import procedural_captions

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(procedural_captions(64, seed=4)) + "\n")
    root = tmp_path / "ds"
    request = {"root": str(root), "captions": {"source": str(corpus), "n": 64},
               "synthesis": {"images_per_caption": 4, "captions_per_shard": 4, "resolution": 384, "image_size": 64,
                             "image_format": "png", "batch_size": 4},
               "shards_per_task": 2}
    prefect = str(Path(sys.executable).parent / "prefect")
    args = [prefect, "deployment", "run", "build-dataset/default", "--param", f"request={json.dumps(request)}"]
    started = subprocess.run(args, env=stack["env"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
    deadline = time.time() + 300
    while len(list((root / "shards").glob("*.json"))) < 3:
        assert time.time() < deadline, "no shard committed in time"
        time.sleep(0.2)
    worker = int((Path(stack["env"]["STACK_DIR"]) / "worker-cpu.pid").read_text())
    flow_processes = [p for p in _descendants(worker) if p != worker]
    assert flow_processes, "the flow run's process was not found under the worker"
    for pid in flow_processes:  # preemption: the flow run and its shard subprocess die at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 120
    while (state := _api(stack, f"/flow_runs/{run_id}")["state"]["type"]) not in ("CRASHED", "FAILED", "COMPLETED"):
        assert time.time() < deadline, f"flow run still {state}"
        time.sleep(1)
    assert state == "CRASHED"
    committed = len(list((root / "shards").glob("*.json")))
    assert not (root / "manifest.json").exists()
    rerun = subprocess.run(args + ["--watch", "--watch-timeout", "600"], env=stack["env"], capture_output=True,
                           text=True, timeout=700)
    assert rerun.returncode == 0, rerun.stdout[-2000:]
    second = re.search(r"UUID: ([0-9a-f-]{36})", rerun.stdout).group(1)
    logs = _api(stack, "/logs/filter", {"logs": {"flow_run_id": {"any_": [second]}}, "limit": 200})
    plan = next(m for m in (log["message"] for log in logs) if "planned shards" in m)
    assert plan.startswith("16 planned shards, ") and int(plan.split(", ")[1].split()[0]) <= 16 - committed, plan
    assert read_manifest(str(root))["totals"]["images"] == 256 and verify_dataset(str(root), deep=True).ok


def test_fan_out_to_the_gpu_pool_deployment(stack, tmp_path):
    """build-dataset on the cpu pool sends its shard batches as flow runs of synthesize-shards/gpu,
    which the gpu pool's worker runs; the parent counts them in and writes the manifest."""
    from stablerep.shards import read_manifest, verify_dataset
    from stablerep.synthesis import procedural_captions

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(procedural_captions(24, seed=6)) + "\n")
    root = tmp_path / "ds"
    request = {"root": str(root), "captions": {"source": str(corpus), "n": 24},
               "synthesis": {"images_per_caption": 2, "captions_per_shard": 4, "resolution": 64, "image_size": 32},
               "shards_per_task": 3, "fan_out": "deployment"}
    run = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run", "build-dataset/default",
                          "--param", f"request={json.dumps(request)}", "--watch", "--watch-timeout", "600"],
                         env=stack["env"], capture_output=True, text=True, timeout=700)
    assert run.returncode == 0, run.stdout[-3000:]
    parent = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)
    children = _api(stack, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}})
    shard_runs = [c for c in children if c.get("deployment_id")]
    assert len(shard_runs) == 2 and all(c["state"]["type"] == "COMPLETED" for c in shard_runs)
    pools = {c["work_pool_name"] for c in shard_runs}
    assert pools == {"gpu"}, pools
    assert read_manifest(str(root))["totals"]["images"] == 48 and verify_dataset(str(root), deep=True).ok
