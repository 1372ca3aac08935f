"""tasks/training.py's helpers: torchrun's options for one machine or several nodes, the address a
node announces, the summary read back from a run directory, and what a run publishes (Prefect's
artifact calls replaced by recorders, so no server runs)."""

import base64
import json
import re

import pytest

import tasks.training as training
from stablerep.config import load_config
from stablerep.errors import CheckpointError
from tasks.training import node_address, torchrun_options, training_summary


def test_one_machine_is_a_standalone_rendezvous():
    assert torchrun_options(4) == ["--standalone", "--nproc-per-node=4"]
    assert torchrun_options(2, nnodes=1, rdzv_endpoint="10.0.0.1:29400", rdzv_id="ignored") == [
        "--standalone", "--nproc-per-node=2"]


@pytest.mark.parametrize("endpoint, job", [(None, "job-1"), ("127.0.0.1:29400", None), ("", "job-1")])
def test_several_nodes_need_an_endpoint_and_a_job_id(endpoint, job):
    with pytest.raises(ValueError, match="2 nodes need a rendezvous endpoint"):
        torchrun_options(1, nnodes=2, rdzv_endpoint=endpoint, rdzv_id=job)


def test_a_node_of_a_multi_node_job_meets_the_others_at_the_c10d_rendezvous():
    assert torchrun_options(2, nnodes=3, rdzv_endpoint="127.0.0.1:29400", rdzv_id="build-7", rdzv_timeout_s=90.7,
                            node_rank=1) == [
        "--nnodes=3", "--nproc-per-node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:29400",
        "--rdzv-id=build-7", "--rdzv-conf=join_timeout=90", "--max-restarts=0", "--local-addr=127.0.0.2"]


@pytest.mark.parametrize("rank, address", [(0, "127.0.0.1"), (1, "127.0.0.2"), (5, "127.0.0.6")])
def test_nodes_on_one_host_take_loopback_addresses_of_their_own(rank, address):
    # the rendezvous on loopback: nothing listens there, and a UDP connect sends no packet
    assert node_address("127.0.0.1:29400", rank) == address
    assert node_address("localhost:1", rank) == address


def test_the_summary_is_the_last_logged_step_and_the_newest_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 2, "loss": 5.5, "images_per_s": 90.0}, {"step": 4, "loss": 4.25, "images_per_s": 95.0}]) + "\n")
    assert training_summary(str(run_dir)) == {"run_dir": str(run_dir), "steps": 4, "final_loss": 4.25,
                                              "checkpoint": None}
    (run_dir / "checkpoints" / "latest.json").write_text(json.dumps({"name": "step-00000004"}))
    assert training_summary(str(run_dir))["checkpoint"] == str(run_dir / "checkpoints" / "step-00000004")


def test_a_run_that_logged_nothing_has_no_summary(tmp_path):
    with pytest.raises(RuntimeError, match="no metrics.jsonl; the training run wrote nothing"):
        training_summary(str(tmp_path / "never-ran"))


def test_a_torn_checkpoint_pointer_is_a_checkpoint_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    (tmp_path / "checkpoints" / "latest.json").write_text('{"na')
    with pytest.raises(CheckpointError, match="unreadable checkpoint pointer"):  # permanent: not retried
        training_summary(str(tmp_path))


@pytest.fixture
def published(monkeypatch):
    made = []
    monkeypatch.setattr(training, "create_table_artifact", lambda **kw: made.append(("table", kw)))
    monkeypatch.setattr(training, "create_markdown_artifact", lambda **kw: made.append(("markdown", kw)))
    return made


def test_a_run_publishes_its_results_table_and_loss_curve(tmp_path, published):
    run = load_config("tiny_cpu")
    method = run.loss.method
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "loss": 6.0, "lr": 1e-4, "images_per_s": 40.04},
        {"step": 2, "loss": 5.123456, "lr": 2e-4, "images_per_s": 50.06}]))
    training.publish_training(run, str(tmp_path), {"steps": 2, "final_loss": 5.123456})
    (kind, table), (kind2, markdown) = published
    assert kind == "table" and kind2 == "markdown"
    assert table == {"key": f"training-{method}", "description": f"Training run {tmp_path}", "table": [{
        "method": method, "run_dir": str(tmp_path), "steps": 2, "final_loss": 5.1235, "images_per_s": 50.1,
        "backbone": run.model.backbone, "captions_per_batch": run.data.captions_per_batch,
        "images_per_caption": run.data.images_per_caption}]}
    assert markdown["key"] == f"loss-curve-{method}" and markdown["description"] == f"Loss curve: {tmp_path}"
    assert markdown["markdown"].startswith(f"### {method}: loss\n")
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)\)", markdown["markdown"]).group(1))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_run_without_metrics_publishes_only_its_table(tmp_path, published):
    run = load_config("tiny_cpu")
    training.publish_training(run, str(tmp_path), {"steps": None, "final_loss": None})
    assert [kind for kind, _ in published] == ["table"]
    row = published[0][1]["table"][0]
    assert row["steps"] is None and row["final_loss"] != row["final_loss"]  # NaN: no loss was logged
