"""One suite merge for every caller: `stablerep evaluate`, the `evaluate-encoders` flow and the
experiments build their suite with stablerep.evaluation.suite.merged_suite (through
stablerep.stages.evaluate)."""

import pytest
import yaml

from stablerep.evaluation.suite import EvalSuite, merged_suite
from stablerep.stages import STAGES, EvaluationJob


def write_suite(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({
        "datasets": {"pets": "imagefolder:/data/pets", "digits": {"spec": "parquet:/data/digits", "per_class": 7}},
        "encoders": {"a": "random:/runs/a", "b": "/runs/b"},
        "protocols": {"knn": {"k": 5}, "few_shot": {"episodes": 50}},
        "features": {"batch_size": 32},
        "seed": 3,
    }))
    return str(path)


def test_named_entries_replace_by_name_and_sections_merge_field_by_field(tmp_path):
    suite = merged_suite(write_suite(tmp_path), {
        "datasets": {"digits": "imagefolder:/other", "flowers": {"spec": "parquet:/f"}},
        "encoders": {"b": "/runs/b2"},
        "protocols": {"knn": {"temperature": 0.1}, "few_shot": {"enabled": False}},
        "features": {"device": "cpu"},
    })
    assert suite.encoders == {"a": "random:/runs/a", "b": "/runs/b2"}
    assert {n: d.spec for n, d in suite.datasets.items()} == {
        "pets": "imagefolder:/data/pets", "digits": "imagefolder:/other", "flowers": "parquet:/f"}
    # an entry given replaces the file's entry of that name: its options do not leak into the new spec
    assert suite.datasets["digits"].per_class == EvalSuite.model_validate(
        {"datasets": {"x": "imagefolder:/x"}}).datasets["x"].per_class
    assert (suite.protocols.knn.k, suite.protocols.knn.temperature) == (5, 0.1)
    assert (suite.protocols.few_shot.episodes, suite.protocols.few_shot.enabled) == (50, False)
    assert (suite.features.batch_size, suite.features.device) == (32, "cpu")
    assert suite.seed == 3


def test_skip_bad_images_reaches_every_dataset_and_no_file_means_the_defaults(tmp_path):
    suite = merged_suite(write_suite(tmp_path), {"datasets": {"extra": "parquet:/e"}}, skip_bad_images=True)
    assert all(entry.skip_bad_images for entry in suite.datasets.values()) and len(suite.datasets) == 3
    bare = merged_suite(None, {"encoders": {"a": "/r"}})
    assert bare.model_dump() == EvalSuite.model_validate({"encoders": {"a": "/r"}}).model_dump()


def test_the_evaluation_stage_is_a_stage_and_its_job_is_strict(tmp_path):
    model, fn = STAGES["evaluate"]
    assert model is EvaluationJob
    with pytest.raises(ValueError):
        EvaluationJob.model_validate({"out": None, "suites": {}})
    with pytest.raises(ValueError, match="nothing to evaluate on"):
        fn(EvaluationJob(out=None, suite={"encoders": {"a": "/r"}}))
