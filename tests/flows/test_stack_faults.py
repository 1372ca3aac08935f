"""The stack against a fleet's failures: `deployments/stack.sh up` with two gpu-pool workers,
flow-run heartbeats and the missing-heartbeat automation, and basic auth on the server.

- A request without credentials is refused (401); none of the stack's outputs shows them.
- A GPU host lost in the middle of a batch (its worker and the flow run's processes get SIGKILL:
  nothing reports to the server) is marked Crashed by the automation once its heartbeats stop;
  build-dataset runs that batch again on the other worker, which redoes only the shards the lost
  one had not committed, and the dataset equals an uninterrupted build.
"""

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.helpers.stack import api, descendants, flow_run_of, stack_env

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
ZOMBIE_AFTER_S = 90  # three missed heartbeats at the 30 s minimum period
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet")
    port = free_port()
    env = {**os.environ, "PREFECT_PORT": str(port), "STACK_DIR": str(directory),
           "PYTHON_BIN": str(Path(sys.executable).parent), "STACK_GPU_WORKERS": "2",
           "STACK_HEARTBEAT_S": "30", "STACK_ZOMBIE_AFTER_S": str(ZOMBIE_AFTER_S),
           "STACK_PENDING_AFTER_S": str(ZOMBIE_AFTER_S)}
    for key in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_API_AUTH_STRING"):
        env.pop(key, None)
    up = subprocess.run([str(ROOT / "deployments/stack.sh"), "up"], env=env, capture_output=True, text=True,
                        timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        user_env = stack_env(directory, port)
        yield {"dir": directory, "env": user_env, "api": user_env["PREFECT_API_URL"],
               "auth": user_env["PREFECT_API_AUTH_STRING"], "up": up.stdout + up.stderr}
    finally:
        subprocess.run([str(ROOT / "deployments/stack.sh"), "down"], env=env, capture_output=True, timeout=120)
        assert not list(directory.glob("*.pid"))


def _api(fleet, path, body=None):
    return api(fleet["api"], path, body, auth=fleet["auth"])


def _status(url, body=None, auth=None):
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_server_refuses_requests_without_the_credentials(fleet):
    assert (fleet["dir"] / "auth.env").stat().st_mode & 0o777 == 0o600
    filter_url = fleet["api"] + "/flow_runs/filter"
    assert _status(filter_url, {}) == 401  # a raw request, no credentials
    user = fleet["auth"].split(":", 1)[0]
    assert _status(filter_url, {}, auth=f"{user}:not-the-password") == 401
    assert _status(filter_url, {}, auth=fleet["auth"]) == 200
    assert _status(fleet["api"] + "/health") == 200  # liveness probes stay open
    anonymous = {k: v for k, v in fleet["env"].items() if k != "PREFECT_API_AUTH_STRING"}
    refused = subprocess.run([PREFECT, "deployment", "ls"], env=anonymous, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    listed = subprocess.run([PREFECT, "deployment", "ls"], env=fleet["env"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "synthesize-shards" in listed.stdout


def _corpus(tmp_path, n, seed):
    from stablerep.synthesis import procedural_captions

    path = tmp_path / f"corpus-{seed}.txt"
    path.write_text("\n".join(procedural_captions(n, seed=seed)) + "\n")
    return path


SYNTHESIS = {"images_per_caption": 4, "captions_per_shard": 4, "resolution": 512, "image_size": 64,
             "image_format": "png", "batch_size": 4}


def _reference(tmp_path, corpus, n):
    """The same dataset built without interruption, in one process (`stablerep synthesize`)."""
    from stablerep.shards import read_manifest

    root = str(tmp_path / "reference")
    for args in (["captions", "sample", str(corpus), "--out", root, "--n", str(n)],
                 ["synthesize", "--captions", root, "--out", root, "--backend", "procedural",
                  *[f"--{k.replace('_', '-')}={v}" for k, v in SYNTHESIS.items() if k != "image_format"],
                  f"--format={SYNTHESIS['image_format']}"]):
        done = subprocess.run([sys.executable, "-m", "stablerep", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return [(s["index"], s["sha256"], s["rows"]) for s in read_manifest(root)["shards"]]


def _running_batches(fleet):
    """{worker name: (its flow-run processes, the flow run id)} for the gpu workers now running one."""
    out = {}
    for pid_file in fleet["dir"].glob("worker-gpu*.pid"):
        worker = int(pid_file.read_text())
        below = [p for p in descendants(worker) if p != worker]
        runs = {flow_run_of(p) for p in below} - {None}
        if runs:
            out[pid_file.stem] = (below, runs.pop(), worker)
    return out


def _wait_state(fleet, run_id, states, timeout):
    deadline = time.time() + timeout
    while (state := _api(fleet, f"/flow_runs/{run_id}")["state"]) and state["type"] not in states:
        assert time.time() < deadline, f"flow run {run_id} still {state['type']} after {timeout} s"
        time.sleep(2)
    return state


def test_a_lost_gpu_host_s_batch_is_run_again_by_the_other_worker(fleet, tmp_path):
    from stablerep.shards import read_manifest, verify_dataset

    corpus = _corpus(tmp_path, 32, seed=12)
    reference = _reference(tmp_path, corpus, 32)
    root = tmp_path / "ds"
    request = {"root": str(root), "captions": {"source": str(corpus), "n": 32}, "synthesis": SYNTHESIS,
               "shards_per_task": 4, "fan_out": "deployment", "batch_attempts": 2}
    started = subprocess.run([PREFECT, "deployment", "run", "build-dataset/default", "--param",
                              f"request={json.dumps(request)}"], env=fleet["env"], capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    parent = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)

    # wait until a gpu worker runs a batch and that batch has committed its first shard
    deadline, target = time.time() + 300, None
    while target is None:
        assert time.time() < deadline, "no batch started on a gpu worker"
        for name, (processes, run_id, worker) in _running_batches(fleet).items():
            shards = _api(fleet, f"/flow_runs/{run_id}")["parameters"]["shards"]
            if (root / "shards" / f"{shards[0]:06d}.json").exists():
                target = name, processes, run_id, worker, shards
        time.sleep(0.05)
    name, processes, lost_run, worker, shards = target
    for pid in processes + [worker]:  # the host is gone: worker, flow run and shard process at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    committed = sorted(i for i in shards if (root / "shards" / f"{i:06d}.json").exists())
    assert committed and len(committed) < len(shards), f"killed too late: {committed} of {shards}"

    time.sleep(15)  # nothing reports the loss: the run stays Running until its heartbeats are missed
    assert _api(fleet, f"/flow_runs/{lost_run}")["state"]["type"] == "RUNNING"
    crashed = _wait_state(fleet, lost_run, ("CRASHED", "COMPLETED", "FAILED"), ZOMBIE_AFTER_S + 150)
    assert crashed["type"] == "CRASHED" and "no heartbeat for" in crashed["message"], crashed
    detected = time.time() - killed_at
    assert _wait_state(fleet, parent, ("COMPLETED", "FAILED", "CRASHED"), 400)["type"] == "COMPLETED"

    children = _api(fleet, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}})
    batch_runs = [c for c in children if c["parameters"].get("shards") == shards]
    assert sorted(c["state"]["type"] for c in batch_runs) == ["COMPLETED", "CRASHED"], batch_runs
    rerun = next(c for c in batch_runs if c["state"]["type"] == "COMPLETED")
    survivor = "worker-gpu-2" if name == "worker-gpu" else "worker-gpu"
    assert rerun["id"] in (fleet["dir"] / f"{survivor}.log").read_text()  # taken by the other worker
    logs = _api(fleet, "/logs/filter", {"logs": {"flow_run_id": {"any_": [rerun["id"]]}}, "limit": 200})
    done = next(m for m in (log["message"] for log in logs) if m.startswith(f"shards {shards}: wrote"))
    skipped = json.loads(done.split("skipped ")[1])
    assert set(committed) <= set(skipped) and len(skipped) < len(shards), done  # only uncommitted shards redone
    others = [c for c in children if c["parameters"].get("shards") != shards and c.get("deployment_id")]
    assert others and all(c["state"]["type"] == "COMPLETED" for c in others)

    assert [(s["index"], s["sha256"], s["rows"]) for s in read_manifest(str(root))["shards"]] == reference
    assert verify_dataset(str(root), deep=True).ok
    print(f"lost host: {len(committed)} of {len(shards)} shards committed at the kill; marked Crashed "
          f"{detected:.0f} s after it; the batch ran again on {survivor}")
    # the stack starts the killed worker again; the next test sees a whole fleet
    again = subprocess.run([str(ROOT / "deployments/stack.sh"), "workers"], capture_output=True, text=True,
                           env={**fleet["env"], "STACK_DIR": str(fleet["dir"]), "STACK_GPU_WORKERS": "2",
                                "PYTHON_BIN": str(Path(sys.executable).parent),
                                "PREFECT_PORT": fleet["api"].rsplit(":", 1)[1].split("/")[0]}, timeout=60)
    assert again.returncode == 0 and f"{survivor} already running" in again.stdout, again.stdout + again.stderr


def test_the_credentials_appear_in_no_log_artifact_parameter_or_process_listing(fleet, tmp_path):
    corpus = _corpus(tmp_path, 12, seed=13)
    request = {"root": str(tmp_path / "ds"), "captions": {"source": str(corpus), "n": 12},
               "synthesis": {"images_per_caption": 2, "captions_per_shard": 4, "resolution": 64, "image_size": 32},
               "shards_per_task": 1, "fan_out": "deployment"}
    run = subprocess.Popen([PREFECT, "deployment", "run", "build-dataset/default", "--param",
                            f"request={json.dumps(request)}", "--watch", "--watch-timeout", "600"],
                           env=fleet["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listings = []
    while run.poll() is None:  # process listings while the server, workers and flow runs are busy
        listings.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
        time.sleep(1)
    output = run.stdout.read()
    assert run.returncode == 0, output[-3000:]
    assert any("prefect.engine" in text or "stablerep synthesize" in text for text in listings)
    texts = listings + [output, fleet["up"]]
    texts += [p.read_text(errors="replace") for p in fleet["dir"].rglob("*.log")]
    runs = _api(fleet, "/flow_runs/filter", {"limit": 200})
    assert len(runs) >= 4
    texts += [json.dumps({k: r.get(k) for k in ("parameters", "job_variables", "state", "tags")}) for r in runs]
    texts += [json.dumps(d) for d in _api(fleet, "/deployments/filter", {"limit": 200})]
    texts += [json.dumps(a) for a in _api(fleet, "/artifacts/filter", {"limit": 200})]
    texts += [json.dumps(a) for a in _api(fleet, "/automations/filter", {})]
    offset = 0
    while batch := _api(fleet, "/logs/filter", {"limit": 200, "offset": offset}):
        texts += [log["message"] for log in batch]
        offset += len(batch)
    assert offset > 50
    password = fleet["auth"].split(":", 1)[1]
    encoded = base64.b64encode(fleet["auth"].encode()).decode()
    for secret in (password, encoded):
        leaks = [t[max(0, t.find(secret) - 80):t.find(secret) + 80] for t in texts if secret in t]
        assert not leaks, f"the credentials leaked: {leaks[:3]}"
