"""The container product, built and run: the image from docker/Dockerfile on a Debian base made
here with debootstrap, a Prefect server on PostgreSQL, the docker-cpu and docker-gpu pools with
Prefect's Docker worker, and a reduced offline pipeline as flow runs in containers: captions ->
synthesis (shard batches fanned out to docker-gpu) -> shards on SeaweedFS -> training on 2 nodes
(two containers meeting at a c10d rendezvous) -> evaluation. Results are checked through the API
and the store, and the S3 secret and the database password are looked for where they must not be.

Skipped only where no Docker engine can start (no dockerd, not root); CI installs docker.io,
debootstrap and postgresql first. The engine and the image come from tests/docker/conftest.py.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import S3_BUCKET, S3_SECRET, free_port
from tests.helpers.stack import api, stack_credentials

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
IMAGE = "stablerep:latest"


@pytest.fixture(scope="module")
def docker_stack(engine, s3_server, tmp_path_factory):
    """deployments/stack.sh up with PREFECT_DB=postgres and STACK_DOCKER=1 (no GPU on this host)."""
    directory = tmp_path_factory.mktemp("docker-stack")
    db_dir = tempfile.mkdtemp(prefix="stablerep-pg-")  # reachable by the postgres user, unlike pytest's dirs
    port = free_port()
    # this process's environment now (s3_server has set the AWS variables), and the engine
    env = {**os.environ, "DOCKER_HOST": engine["env"]["DOCKER_HOST"], "PREFECT_PORT": str(port), "STACK_DIR": str(directory),
           "PYTHON_BIN": str(Path(sys.executable).parent), "PREFECT_DB": "postgres", "PREFECT_DB_DIR": db_dir,
           "PREFECT_DB_PORT": str(free_port()), "STACK_DOCKER": "1", "STACK_DOCKER_GPUS": "none"}
    for key in ("PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(key, None)
    up = subprocess.run([str(ROOT / "deployments/stack.sh"), "up"], env=env, capture_output=True, text=True,
                        timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        env.update(PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_HOME=str(directory / "home"),
                   PREFECT_API_AUTH_STRING=stack_credentials(directory))
        yield {"env": env, "api": env["PREFECT_API_URL"], "dir": directory, "up": up.stdout}
    finally:
        subprocess.run([str(ROOT / "deployments/stack.sh"), "down"], env=env, capture_output=True, timeout=180)
        shutil.rmtree(db_dir, ignore_errors=True)


def _api(stack, path, body=None):
    return api(stack["api"], path, body, auth=stack["env"]["PREFECT_API_AUTH_STRING"])


def _deploy_run(stack, deployment, request):
    run = subprocess.run([PREFECT, "deployment", "run", deployment, "--param", f"request={json.dumps(request)}",
                          "--watch", "--watch-timeout", "900"], env=stack["env"], capture_output=True, text=True,
                         timeout=1000)
    assert run.returncode == 0, f"{deployment}: {run.stdout[-3000:]}{run.stderr[-2000:]}"
    return re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)


def _children(stack, parent):
    return [c for c in _api(stack, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}})
            if c.get("deployment_id")]


def _keys(stack, run_id):
    return {a["key"] for a in _api(stack, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})}


def _all_logs(stack, run_ids):
    logs, offset = [], 0
    while True:
        page = _api(stack, "/logs/filter", {"logs": {"flow_run_id": {"any_": run_ids}}, "limit": 200, "offset": offset})
        logs += page
        if len(page) < 200:
            return logs
        offset += 200


@pytest.mark.timeout(1800)
def test_offline_pipeline_runs_as_containers_on_a_postgres_backed_stack(engine, docker_stack, s3_server, tmp_path):
    import s3fs

    from stablerep.shards import read_manifest, verify_dataset
    from stablerep.synthesis import procedural_captions

    stack = docker_stack
    assert "database: postgresql://prefect@127.0.0.1" in stack["up"]
    assert "S3 env: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, AWS_SECRET_ACCESS_KEY" in stack["up"]
    prefix = f"s3://{S3_BUCKET}/docker-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe(f"{prefix}/corpus.txt", ("\n".join(procedural_captions(48, seed=3)) + "\n").encode())

    # captions -> synthesis: the dataset flow in a docker-cpu container, its shard batches as
    # synthesize-shards/docker-gpu containers
    root = f"{prefix}/ds"
    build = _deploy_run(stack, "build-dataset/docker", {
        "root": root, "captions": {"source": f"{prefix}/corpus.txt", "n": 32},
        "synthesis": {"backend": "procedural", "images_per_caption": 4, "captions_per_shard": 8, "resolution": 64,
                      "image_size": 32},
        "shards_per_task": 2, "fan_out": "deployment", "shard_deployment": "synthesize-shards/docker-gpu"})
    shard_runs = _children(stack, build)
    assert len(shard_runs) == 2 and {c["work_pool_name"] for c in shard_runs} == {"docker-gpu"}
    assert read_manifest(root)["totals"]["images"] == 128 and verify_dataset(root, deep=True).ok

    # training: two nodes of one rank, each a container, meeting at a rendezvous on the host network
    run_dir = f"{prefix}/runs/stablerep"
    train = _deploy_run(stack, "train-encoder/docker-multi-node", {
        "data": root, "run_dir": run_dir, "preset": "tiny_cpu", "launcher": "torchrun", "nnodes": 2,
        "rdzv_endpoint": f"127.0.0.1:{free_port()}", "node_deployment": "train-encoder-node/docker-gpu-node",
        "overrides": ["train.steps=6", "train.log_every=2", "data.captions_per_batch=8", "data.images_per_caption=2",
                      "train.device=cpu"]})
    nodes = _children(stack, train)
    assert sorted(n["name"] for n in nodes) == ["node-0", "node-1"]
    assert {n["work_pool_name"] for n in nodes} == {"docker-gpu"}
    metrics = [json.loads(line) for line in fs.cat(f"{run_dir}/metrics.jsonl").decode().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4, 6]
    assert fs.exists(f"{run_dir}/checkpoints/latest.json")

    # evaluation of the trained encoder against random init
    out = f"{prefix}/eval"
    evaluate = _deploy_run(stack, "evaluate-encoders/docker-cpu", {
        "out": out, "encoders": {"stablerep": run_dir, "random_init": f"random:{run_dir}"},
        "datasets": {"colour": {"spec": "procedural:colour", "per_class": 8, "size": 64}},
        "protocols": {"linear_probe": {"l2_values": 4}, "few_shot": {"episodes": 20}}, "features": {"cache": None}})
    summary = json.loads(fs.cat(f"{out}/summary.json"))
    assert set(summary["results"]["colour"]) == {"stablerep", "random_init"}

    # every run Completed in a container of our image, on the docker pools
    runs = [_api(stack, f"/flow_runs/{i}") for i in (build, train, evaluate)] + shard_runs + nodes
    assert all(r["state"]["type"] == "COMPLETED" for r in runs), [(r["name"], r["state"]["type"]) for r in runs]
    assert all(r["work_pool_name"].startswith("docker-") for r in runs)
    assert all(re.fullmatch(r".+:[0-9a-f]{64}", r["infrastructure_pid"] or "") for r in runs)  # host:container id
    assert {"dataset-card", "dataset-stats"} <= _keys(stack, build)
    assert {"training-stablerep", "loss-curve-stablerep"} <= _keys(stack, train)
    assert {"evaluation", "evaluation-report"} <= _keys(stack, evaluate)

    # the credentials went through Secret blocks that the worker resolved: the pool holds references
    pool = _api(stack, "/work_pools/docker-gpu")
    env = pool["base_job_template"]["variables"]["properties"]["env"]["default"]
    assert env["AWS_SECRET_ACCESS_KEY"] == "{{ prefect.blocks.secret.stablerep-s3-secret-access-key }}"
    assert pool["base_job_template"]["variables"]["properties"]["container_create_kwargs"]["default"] == {"shm_size": "8g"}

    # no secret in the image, parameters, job variables, logs or worker output
    secrets = {"S3 secret key": S3_SECRET, "database password": (stack["dir"] / "db.password").read_text().strip()}
    docker, denv = engine["docker"], engine["env"]
    image = subprocess.run([docker, "image", "inspect", IMAGE], env=denv, capture_output=True, text=True, check=True).stdout
    history = subprocess.run([docker, "history", "--no-trunc", IMAGE], env=denv, capture_output=True, text=True,
                             check=True).stdout
    assert json.loads(image)[0]["Config"]["User"] == "stablerep"
    deployments = _api(stack, "/deployments/filter", {})
    places = {"docker image inspect": image, "docker history": history,
              "flow run parameters and job variables": json.dumps([(r["parameters"], r["job_variables"]) for r in runs]),
              "deployments": json.dumps(deployments), "work pools": json.dumps(_api(stack, "/work_pools/filter", {})),
              "flow run logs": json.dumps(_all_logs(stack, [r["id"] for r in runs])),
              "stack logs": "".join(p.read_text(errors="replace") for p in stack["dir"].glob("*.log"))}
    assert "Beginning flow run" in places["flow run logs"] and "Docker container" in places["stack logs"]
    for what, secret in secrets.items():
        for where, text in places.items():
            assert secret not in text, f"the {what} appears in {where}"
