"""One experiment recipe, written once as a plan of stage jobs: the demo and the corpus experiment
build plans of the same kind and run through the one executor (and the pipeline flow builds the
same plans); `stablerep experiment` runs the paper's comparison end to end on a real corpus that
img2dataset downloaded, evaluated on real handwritten digits."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stablerep.experiments.budget import budget_of
from stablerep.experiments.corpus import (
    CorpusExperimentConfig,
    build_corpus_plan,
    run_corpus_experiment,
)
from stablerep.experiments.demo import DemoConfig, build_demo_plan, run_demo
from stablerep.experiments.plan import (
    CaptionsStep,
    ExperimentPlan,
    ImportStep,
    ProbeEvaluation,
    SuiteEvaluation,
    SynthesisStep,
    saved_run_config,
)
from stablerep.experiments.runs import comparison_run
from stablerep.shards import read_manifest
from stablerep.shards.captions import load_captions
from tests.helpers.datasets import write_digits_imagefolder

ROOT = Path(__file__).resolve().parent.parent


def _corpus_config(sources, suite, **settings) -> CorpusExperimentConfig:
    return CorpusExperimentConfig.model_validate({"sources": sources, "suite": suite, **settings})


def _record_executor(monkeypatch) -> list:
    """Replace the executor's stage calls with recorders: what run_plan executes, in order."""
    calls: list = []
    monkeypatch.setattr("stablerep.experiments.plan.check_plan", lambda plan: calls.append(("check", plan)))
    monkeypatch.setattr("stablerep.experiments.plan.run_dataset_step", lambda step: calls.append(("dataset", step)) or {})
    monkeypatch.setattr("stablerep.experiments.plan.train", lambda job: calls.append(("train", job)) or {})

    def evaluate(plan, runs, progress=None):
        calls.append(("evaluate", plan, runs))
        return {}

    monkeypatch.setattr("stablerep.experiments.plan.evaluate_runs", evaluate)
    monkeypatch.setattr("stablerep.experiments.plan.write_comparison_report", lambda out, summary: {"summary": f"{out}/summary.json"})
    return calls


def test_demo_and_corpus_experiment_are_plans_run_by_the_one_executor(tmp_path, monkeypatch):
    demo_cfg = DemoConfig(seeds=[0, 1])
    corpus_cfg = _corpus_config(["s3://bucket/corpus/{00000..00003}.tar"], {"digits": "imagefolder:/data/digits"},
                                captions=256, seeds=[0, 1], synthesis={"backend": "tiny"})
    demo, corpus = build_demo_plan(str(tmp_path / "demo"), demo_cfg), build_corpus_plan(str(tmp_path / "c"), corpus_cfg)
    assert type(demo) is type(corpus) is ExperimentPlan
    assert [type(s) for s in demo.datasets] == [CaptionsStep, SynthesisStep, SynthesisStep]
    assert [type(s) for s in corpus.datasets] == [ImportStep, SynthesisStep]
    assert isinstance(demo.evaluation, ProbeEvaluation) and isinstance(corpus.evaluation, SuiteEvaluation)
    # the corpus experiment synthesises exactly the imported captions: K images each, at the import's size
    imported, synthesised = corpus.datasets
    assert imported.job.out == synthesised.job.captions == corpus.roots["real"]
    assert imported.job.config.n == 256 and imported.job.config.image_size == synthesised.job.synthesis.image_size
    assert synthesised.job.synthesis.backend == "tiny" and synthesised.job.synthesis.images_per_caption == 4
    # StableRep on the synthetic images, SimCLR and CLIP on the real ones; one budget, every seed
    assert {(s.name, s.job.data) for s in corpus.runs} == {
        ("stablerep", corpus.roots["synthetic"]), ("simclr", corpus.roots["real"]), ("clip", corpus.roots["real"])}
    for plan, cfg in ((demo, demo_cfg), (corpus, corpus_cfg)):
        assert len(plan.runs) == len({(s.name, s.seed) for s in plan.runs}) and {s.seed for s in plan.runs} == {0, 1}
        for step in plan.runs:
            assert step.job.run == comparison_run(cfg, step.name, step.seed)
        budgets = [budget_of(s.job.run) for s in plan.runs]
        for key in ("images_per_step", "steps", "augmentation", "lr"):
            assert len({json.dumps(b[key], sort_keys=True) for b in budgets}) == 1, key
    # both recipes run through run_plan: every dataset step, then every run, then the evaluation
    calls = _record_executor(monkeypatch)
    run_demo(demo.out, demo_cfg, progress=False)
    run_corpus_experiment(corpus.out, corpus_cfg, progress=False)
    expected = [("check", demo), *[("dataset", s) for s in demo.datasets], *[("train", s.job) for s in demo.runs],
                ("evaluate", demo, demo.runs_by_method()),
                ("check", corpus), *[("dataset", s) for s in corpus.datasets],
                *[("train", s.job) for s in corpus.runs], ("evaluate", corpus, corpus.runs_by_method())]
    assert calls == expected


def test_the_pipeline_flow_builds_the_same_plans(tmp_path, monkeypatch):
    from flows import pipeline

    planned = []
    monkeypatch.setattr(pipeline, "run_plan_as_tasks", lambda plan, launcher: planned.append(plan) or {})
    corpus_cfg = _corpus_config([str(tmp_path / "corpus")], {"digits": "imagefolder:/data/digits"})
    pipeline.stablerep_pipeline.fn(str(tmp_path / "flow"), corpus=corpus_cfg)
    pipeline.stablerep_pipeline.fn(str(tmp_path / "flow"))
    assert planned == [build_corpus_plan(str(tmp_path / "flow"), corpus_cfg),
                       build_demo_plan(str(tmp_path / "flow"), DemoConfig())]
    with pytest.raises(ValueError, match="not both"):
        pipeline.stablerep_pipeline.fn(str(tmp_path / "flow"), demo=DemoConfig(), corpus=corpus_cfg)


@pytest.mark.parametrize("settings, message", [
    ({"synthesis": {"images_per_caption": 8}}, "synthesis.images_per_caption: set by the experiment; set "
                                               "images_per_caption instead"),
    ({"reader": {"n": 10}}, "reader.n: set by the experiment; set captions instead"),
    ({"suite": {"digits": "tfds:mnist"}}, "unknown kind 'tfds'"),
    ({"captions": 16}, "simclr needs 32 captions per step; the experiment has 16"),
    ({"methods": ["supervised"]}, "methods.0"),
])
def test_bad_corpus_requests_are_refused_before_any_work(settings, message):
    with pytest.raises(ValueError, match=message):
        _corpus_config(["corpus/"], **{"suite": {"digits": "imagefolder:/data/digits"}, **settings})


# ---------------------------------------------------------------- end to end on a real corpus

def _digits_folder(root: Path, train: int = 30, test: int = 10) -> Path:
    """Real handwritten digits (scikit-learn's scans): ``train`` / ``test`` of each class."""
    return Path(write_digits_imagefolder(str(root), train, test))


@pytest.fixture(scope="module")
def img2dataset_corpus(tmp_path_factory):
    from tests.helpers.corpus import build_corpus

    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _experiment(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stablerep", "experiment", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


SMALL = {"captions": 64, "images_per_caption": 2, "synthesis.backend": "tiny", "steps": 10, "images_per_step": 16,
         "seeds": [0, 1], "captions_per_shard": 32, "l2_values": 4, "few_shot_episodes": 20}


@pytest.mark.integration  # img2dataset's download and the CLI run in child processes
@pytest.mark.slow  # about 40 s for the corpus, 40 s for the experiment on 2 cores
def test_experiment_cli_on_an_img2dataset_corpus(img2dataset_corpus, tiny_sd, tmp_path):
    digits, out = _digits_folder(tmp_path / "digits"), tmp_path / "experiment"
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    result = _experiment("--corpus", str(img2dataset_corpus.webdataset), "--suite", f"digits=imagefolder:{digits}",
                         "--out", str(out), *sets)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert printed["linear_probe"] == summary["linear_probe"]
    # the same 64 captions on both sides: their real photographs, and K = 2 generated images each
    real, synthetic = str(out / "real"), str(out / "synthetic")
    ids = load_captions(real).column("caption_id").to_pylist()
    assert len(ids) == 64 and load_captions(synthetic).column("caption_id").to_pylist() == ids
    assert read_manifest(synthetic)["totals"]["images"] == 128
    assert read_manifest(synthetic)["config"]["backend"] == "tiny"
    # every method and the random floor, with 95% intervals, every figure an accuracy
    methods = {"stablerep", "simclr", "clip", "random_init"}
    assert summary["metrics"] == ["linear_probe", "knn", "few_shot_5way_5shot"]
    for metric in summary["metrics"]:
        assert set(summary[metric]) == methods, metric
        assert all(0 <= v <= 1 for v in summary[metric].values()), (metric, summary[metric])
        assert all(ci is not None and ci >= 0 for ci in summary["ci95"][metric].values()), metric
        assert all(len(v) == 2 and all(0 <= x <= 1 for x in v) for v in summary["per_seed"][metric].values())
    assert summary["suite"]["datasets"] == ["digits"] and summary["suite"]["chance"]["digits"] == pytest.approx(0.1)
    # one budget: what each run saved in its config.json, equal across methods
    for method, by_seed in summary["runs"].items():
        for directory in by_seed.values():
            assert budget_of(saved_run_config(directory)) == summary["budget"][method]
    budgets = list(summary["budget"].values())
    for key in ("images_per_step", "steps", "augmentation", "lr"):
        assert all(b[key] == budgets[0][key] for b in budgets), key
    assert budgets[0]["images_per_step"] == 16 and budgets[0]["steps"] == 10
    assert summary["runs"]["stablerep"]["0"].startswith(str(out / "runs" / "stablerep"))
    # the report: intervals, the budget, and what the intervals support (every difference, in words)
    table = (out / "results.md").read_text()
    assert table.startswith("| encoder | seeds | linear probe | kNN | 5-way 5-shot |") and " ± " in table
    assert "| clip | 16 | 16 | 10 |" in table and "Chance: digits 0.100" in table
    from stablerep.experiments.compare import findings

    assert findings(summary) and all(line in table for line in findings(summary))
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun resumes: everything is committed, nothing is imported, generated or trained again
    committed = {path: path.read_bytes() for path in [out / "real" / "manifest.json", out / "synthetic" / "manifest.json",
                                                      *sorted((out / "runs").rglob("metrics.jsonl"))]}
    again = _experiment("--corpus", str(img2dataset_corpus.webdataset), "--suite", f"digits=imagefolder:{digits}",
                        "--out", str(out), *sets)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: path.read_bytes() for path in committed} == committed
    assert json.loads((out / "summary.json").read_text())["per_seed"] == summary["per_seed"]


@pytest.mark.integration  # runs the CLI in a child process
def test_experiment_refuses_an_evaluation_set_with_one_image_per_class_before_any_work(tmp_path):
    digits, out = _digits_folder(tmp_path / "digits", train=1, test=1), tmp_path / "experiment"
    result = _experiment("--corpus", str(tmp_path / "corpus"), "--suite", f"digits=imagefolder:{digits}",
                         "--out", str(out))
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"error: digits=imagefolder:{digits}: class '0' has 1 train image(s)"), lines
    assert "the linear probe needs at least 2 train and 1 test images per class" in lines[0]
    assert not out.exists()
