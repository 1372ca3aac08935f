"""docker/compose.yaml with docker/compose.local.yaml, run here: PostgreSQL and SeaweedFS from the
stand-in images (docker/local.sh services), the server, the setup job, a process worker and the
Docker workers from our image, all on the host network. A dataset is built through the process
pool and through the docker pools (the Docker worker inside compose starts the flow-run
containers on the same engine), then both are verified on the compose store; `down -v` removes
everything. Needs docker-compose (CI installs Debian's)."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.docker.conftest import LOCAL, ROOT

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).parent / "prefect")
COMPOSE = shutil.which("docker-compose")


@pytest.fixture(scope="module")
def compose_stack(engine, tmp_path_factory):
    if COMPOSE is None:
        pytest.skip("no docker-compose here: apt-get install docker-compose")
    env = dict(engine["env"])
    built = subprocess.run([str(LOCAL), "services"], env=env, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:]
    ports = {"PREFECT_PORT": free_port(), "POSTGRES_PORT": free_port(), "S3_PORT": free_port()}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(DOCKER_SOCKET=env["DOCKER_HOST"].removeprefix("unix://"), STACK_DOCKER_GPUS="none",
               POSTGRES_PASSWORD="compose-db-password-7f3a", AWS_ACCESS_KEY_ID="compose-key",
               PREFECT_API_AUTH_STRING="stablerep:compose-api-password-5e1d",
               AWS_SECRET_ACCESS_KEY="compose-s3-secret-91c2")
    project = [COMPOSE, "-p", "stablerep-test", "-f", str(ROOT / "docker/compose.yaml"),
               "-f", str(ROOT / "docker/compose.local.yaml")]
    try:
        up = subprocess.run([*project, "up", "-d", "--no-build"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr[-3000:]
        # the setup job registers pools and deployments once the server is healthy, then exits
        setup = subprocess.run([*project, "ps", "-q", "setup"], env=env, capture_output=True, text=True).stdout.strip()
        wait = subprocess.run([engine["docker"], "wait", setup], env=env, capture_output=True, text=True, timeout=600)
        logs = subprocess.run([*project, "logs", "--no-color", "setup"], env=env, capture_output=True, text=True)
        assert wait.stdout.strip() == "0", logs.stdout[-3000:]
        env.update(PREFECT_API_URL=f"http://127.0.0.1:{ports['PREFECT_PORT']}/api",
                   AWS_ENDPOINT_URL=f"http://127.0.0.1:{ports['S3_PORT']}",
                   PREFECT_HOME=str(tmp_path_factory.mktemp("compose-home")))
        yield {"env": env, "project": project}
    finally:
        subprocess.run([*project, "down", "-v", "--remove-orphans"], env=env, capture_output=True, timeout=300)
        left = subprocess.run([*project, "ps", "-q"], env=env, capture_output=True, text=True).stdout.split()
        assert not left, f"compose left containers: {left}"


def _build(stack, deployment, request):
    run = subprocess.run([PREFECT, "deployment", "run", deployment, "--param", f"request={json.dumps(request)}",
                          "--watch", "--watch-timeout", "500"], env=stack["env"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, f"{deployment}: {run.stdout[-3000:]}"
    return re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)


@pytest.mark.timeout(1500)
def test_compose_stack_builds_datasets_through_process_and_docker_pools(compose_stack, monkeypatch, request):
    import s3fs

    from stablerep.shards import read_manifest, verify_dataset
    from stablerep.synthesis import procedural_captions

    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, compose_stack["env"][key])
    # fsspec caches filesystems by their arguments, not by the environment: an instance made for
    # the session's S3 server would read the session's store, not the compose one
    s3fs.S3FileSystem.clear_instance_cache()
    request.addfinalizer(s3fs.S3FileSystem.clear_instance_cache)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for attempt in range(60):  # the filer can lag the S3 port
        try:
            fs.mkdir("compose-test")
            break
        except Exception:
            if attempt == 59:
                raise
            time.sleep(0.5)
    fs.pipe("s3://compose-test/corpus.txt", ("\n".join(procedural_captions(24, seed=1)) + "\n").encode())
    base = {"captions": {"source": "s3://compose-test/corpus.txt", "n": 16}, "shards_per_task": 2,
            "synthesis": {"images_per_caption": 2, "captions_per_shard": 4, "resolution": 64, "image_size": 32}}
    _build(compose_stack, "build-dataset/default", {**base, "root": "s3://compose-test/process"})
    _build(compose_stack, "build-dataset/docker", {**base, "root": "s3://compose-test/docker", "fan_out": "deployment",
                                                   "shard_deployment": "synthesize-shards/docker-gpu"})
    for root in ("s3://compose-test/process", "s3://compose-test/docker"):
        assert read_manifest(root)["totals"]["images"] == 32 and verify_dataset(root, deep=True).ok
