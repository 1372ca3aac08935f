"""The evaluate-encoders flow under a real (temporary) Prefect server, on real images."""

import json

import pytest

from stablerep.config import load_config
from stablerep.data import RandomCaptionBatches
from stablerep.training import run_training_loop
from tests.helpers.datasets import write_digits_parquet

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_evaluate_flow_writes_the_report_and_shows_it(tmp_path):
    from prefect.client.orchestration import get_client

    from flows.evaluation import EvaluateRequest, evaluate_encoders_flow

    run_dir = tmp_path / "run"
    run_training_loop(load_config("tiny_cpu", ["train.steps=3", "optim.warmup_steps=0"]), RandomCaptionBatches(16, 4, 32),
          str(run_dir), progress=False)
    digits = write_digits_parquet(str(tmp_path / "digits.parquet"))
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(f"datasets:\n  digits: parquet:{digits}\nencoders:\n  floor: random:{run_dir}\n")
    request = EvaluateRequest.model_validate({
        "out": str(tmp_path / "eval"), "suite_file": str(suite_file), "encoders": {"run": str(run_dir)},
        "protocols": {"linear_probe": {"l2_values": 4}, "few_shot": {"episodes": 20}},
        "features": {"cache": None}})
    result = evaluate_encoders_flow(request)
    assert set(result["results"]["digits"]) == {"floor", "run"}
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["settings"]["protocols"]["linear_probe"]["l2_values"] == 4
    assert 0.5 < summary["results"]["digits"]["floor"]["linear_probe"] <= 1.0  # real digits are easy to probe
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"evaluation", "evaluation-report"} <= keys
