"""The Docker engine and the image, once per test session: docker/local.sh starts an engine with
no bridge network (or reuses one that answers), imports the Debian base made with debootstrap and
builds stablerep:latest on it. Images and the build cache stay in the engine's data root, so a
later session rebuilds only what changed. Skipped only where no engine can start here."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "docker" / "local.sh"


@pytest.fixture(scope="session")
def engine():
    """{"env": environment with DOCKER_HOST, "docker": the client}; stops the engine if it started it."""
    env = dict(os.environ)
    started = subprocess.run([str(LOCAL), "start"], env=env, capture_output=True, text=True, timeout=120)
    if started.returncode == 3:
        pytest.skip(f"no Docker engine can start here: {started.stdout.strip()}")
    assert started.returncode == 0, started.stdout + started.stderr
    env["DOCKER_HOST"] = started.stdout.split("=", 1)[1].split()[0]
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    leftover = None
    try:
        timings = {}
        for step in ("base", "build"):
            t0 = time.perf_counter()
            done = subprocess.run([str(LOCAL), step], env=env, capture_output=True, text=True, timeout=1800)
            timings[step] = round(time.perf_counter() - t0, 1)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"docker base + build: {timings} s; {done.stdout.strip()}")
        (ROOT / "test-output").mkdir(exist_ok=True)
        (ROOT / "test-output" / "docker-build.json").write_text(json.dumps({**timings, "image": done.stdout.strip()}))
        yield {"env": env, "docker": docker}
    finally:
        leftover = subprocess.run([docker, "ps", "-aq", "--filter", "label=io.prefect.version"], env=env,
                                  capture_output=True, text=True).stdout.split()
        if leftover:
            subprocess.run([docker, "rm", "-f", *leftover], env=env, capture_output=True)
        if "# started dockerd" in started.stdout:
            subprocess.run([str(LOCAL), "stop"], env=env, capture_output=True, timeout=120)
    assert not leftover, f"containers left behind: {leftover}"


