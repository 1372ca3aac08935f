"""Multi-node training through the real stack (`deployments/stack.sh up`): train-encoder/multi-node
(cpu pool) starts one train-encoder-node/gpu flow run per node; two gpu workers stand for two
hosts; torchrun's nodes meet at a c10d rendezvous on loopback and train with gloo."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.flows import test_stack
from tests.flows.test_stack import _api
from tests.helpers.datasets import write_example_dataset


@pytest.fixture(scope="module")
def multinode_stack(tmp_path_factory):
    """The `make up` stack, one for this module, whose flow runs compute with one thread each:
    torchrun sets OMP_NUM_THREADS=1 only for several ranks per node, and a node of one rank on
    two threads sums its matrix products in another order than the two-rank reference (the
    losses then drift apart by about 1e-5 in 8 steps); with equal arithmetic they match."""
    yield from test_stack.running_stack(tmp_path_factory, {"OMP_NUM_THREADS": "1"})


pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
OVERRIDES = ["train.steps=8", "train.log_every=1", "data.captions_per_batch=4", "data.images_per_caption=2",
             "data.num_workers=0", "train.device=cpu"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode") / "ds"
    write_example_dataset(str(root), n_captions=16, images_per_caption=2, captions_per_shard=4, size=32)
    return root


def _request(data, run_dir, **extra):
    return {"data": str(data), "run_dir": str(run_dir), "preset": "tiny_cpu", "overrides": OVERRIDES,
            "launcher": "torchrun", "nproc_per_node": 1, "nnodes": 2,
            "rdzv_endpoint": f"127.0.0.1:{free_port()}", **extra}


def _run(stack, request, watch=True):
    args = [PREFECT, "deployment", "run", "train-encoder/multi-node", "--param", f"request={json.dumps(request)}"]
    if watch:
        args += ["--watch", "--watch-timeout", "400"]
    proc = subprocess.run(args, env=stack["env"], capture_output=True, text=True, timeout=500)
    match = re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, match.group(1)


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines())]


def _children(stack, parent):
    return _api(stack, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}})


def _wait_final(stack, run_id, timeout=300):
    deadline = time.time() + timeout
    while (state := _api(stack, f"/flow_runs/{run_id}")["state"])["type"] not in (
            "COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        assert time.time() < deadline, f"flow run {run_id} still {state['type']}"
        time.sleep(1)
    return state


def test_a_node_that_never_starts_fails_the_job_and_the_others_are_cancelled(multinode_stack, dataset, tmp_path):
    stack = multinode_stack
    """One gpu worker with one slot: node 1 can never start, node 0 waits at the rendezvous until
    its join timeout and fails; the parent then cancels node 1 and fails, naming the node."""
    request = _request(dataset, tmp_path / "run", rdzv_timeout_s=15)
    _, parent = _run(stack, request, watch=False)
    state = _wait_final(stack, parent)
    assert state["type"] == "FAILED", state
    assert "multi-node training failed: node 0" in state["message"], state["message"]
    nodes = {c["name"]: c["state"]["type"] for c in _children(stack, parent) if c.get("deployment_id")}
    assert nodes == {"node-0": "FAILED", "node-1": "CANCELLED"}, nodes


def test_two_nodes_of_one_rank_train_as_one_node_of_two(multinode_stack, dataset, tmp_path):
    stack = multinode_stack
    # the reference: one node, two ranks, torchrun directly
    single = tmp_path / "single"
    ref = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "stablerep", "train", "--config", "tiny_cpu", "--data", str(dataset),
                          "--out", str(single), *[a for o in OVERRIDES for a in ("--set", o)]],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert ref.returncode == 0, ref.stderr[-3000:]

    # a second gpu worker: the second host
    directory = Path(stack["env"]["STACK_DIR"])
    log = open(directory / "worker-gpu-2.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "gpu", "--type", "process", "--limit", "1"],
                              env=stack["env"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        multi = tmp_path / "multi"
        run, parent = _run(stack, _request(dataset, multi))
        assert run.returncode == 0, run.stdout[-3000:]
    finally:  # as stack.sh stops its workers: SIGINT to the group, SIGKILL if it lingers
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
    nodes = [c for c in _children(stack, parent) if c.get("deployment_id")]
    assert sorted(c["name"] for c in nodes) == ["node-0", "node-1"]
    assert {c["work_pool_name"] for c in nodes} == {"gpu"}
    assert all(c["state"]["type"] == "COMPLETED" for c in nodes)
    assert len({c["infrastructure_pid"] for c in nodes}) == 2  # two workers, two processes

    expected = _losses(single)
    assert [s for s, _ in expected] == list(range(1, 9))
    got = _losses(multi)
    assert [s for s, _ in got] == [s for s, _ in expected]
    # the same ranks, data and arithmetic (one thread each): the same losses, bit for bit
    assert got == expected
    artifacts = _api(stack, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [parent]}}})
    assert {"training-stablerep", "loss-curve-stablerep"} <= {a["key"] for a in artifacts}
