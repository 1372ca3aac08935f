"""Mutation check: does the test suite fail when a known-critical line of the code is broken?

Each mutation below is one or more (file, exact original snippet, replacement) edits and the few
test node ids that should catch it. The script copies the repository to a temporary directory
(without .git and caches), runs every listed test once unmutated (they must all pass there, or the
check means nothing), then for each mutation applies its edits to the copy, runs its tests with
PYTHONPATH pointing at the copy, records which of them failed, and restores the file. The real
files are never touched. An original snippet that is missing, or found more than once, is an error.

    PYTHONPATH=. .venv/bin/python benchmarks/mutation_check.py            # every mutation
    PYTHONPATH=. .venv/bin/python benchmarks/mutation_check.py --only seed  # names containing "seed"

Prints a table (mutation, tests run, tests that caught it, caught) and writes
benchmarks/results/mutation-check.json. Exit status: 0 when every mutation is caught, 1 when one
survives, 2 on a setup error (snippet not found, a listed test failing or missing unmutated).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutation-check.json"
IGNORED = (".git", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", ".venv", "runs", "test-output")
PER_TEST_TIMEOUT_S = 300


@dataclass(frozen=True)
class Mutation:
    name: str
    edits: tuple[tuple[str, str, str], ...]  # (file relative to the root, original snippet, replacement)
    tests: tuple[str, ...]  # pytest node ids that should fail under the mutation


MULTIPOS = "stablerep/losses/multipos.py"
T_MULTIPOS = "tests/losses/test_multipos.py"
T_SHARDS = "tests/shards/test_shards.py"
T_AUGMENT = "tests/data/test_augment.py"
T_LOADER = "tests/data/test_shard_dataset.py"
T_CONTRACTS = "tests/test_evaluation_contracts.py"
T_LEASE = "tests/shards/test_lease.py"
LINEAR = "stablerep/evaluation/linear_probe.py"
SUITE = "stablerep/evaluation/suite.py"
KNN = "stablerep/evaluation/knn.py"
FEW_SHOT = "stablerep/evaluation/few_shot.py"
LEASE = "stablerep/shards/lease.py"
GEN_TRAIN = "stablerep/generator/train.py"
T_SHIPPED = "tests/generator/test_shipped.py"

MUTATIONS: tuple[Mutation, ...] = (
    Mutation("loss: self column no longer masked out of the logits", (
        (MULTIPOS, "logits = logits - self_mask.to(logits.dtype) * SELF_MASK_VALUE", "logits = logits"),
    ), (f"{T_MULTIPOS}::test_matches_paper_formula_with_arbitrary_ids",
        f"{T_MULTIPOS}::test_two_images_per_caption_equals_nt_xent")),
    Mutation("loss: an anchor counts itself as a positive", (
        (MULTIPOS, "positives = (labels[:, None] == all_labels[None, :]) & ~self_mask",
         "positives = labels[:, None] == all_labels[None, :]"),
    ), (f"{T_MULTIPOS}::test_matches_paper_formula_with_arbitrary_ids",
        f"{T_MULTIPOS}::test_gradient_matches_autograd_of_direct_formula")),
    Mutation("loss: positive count no longer clamped to 1", (
        (MULTIPOS, "positives.sum(dim=1, keepdim=True).clamp(min=1)", "positives.sum(dim=1, keepdim=True)"),
    ), (f"{T_MULTIPOS}::test_anchor_without_positive_adds_zero_but_counts_in_mean",)),
    Mutation("loss: anchors without a positive left out of the mean", (
        (MULTIPOS, "return -(p * log_q).sum(dim=1).mean()",
         "return -(p * log_q).sum(dim=1).sum() / (positives.sum(dim=1) > 0).sum()"),
    ), (f"{T_MULTIPOS}::test_anchor_without_positive_adds_zero_but_counts_in_mean",)),
    Mutation("seed: image seed mixes caption id and image index in the other order", (
        ("stablerep/seeding.py", "return mix_seed(base_seed, caption_id, image_index)",
         "return mix_seed(base_seed, image_index, caption_id)"),
    ), ("tests/test_seeding.py::test_image_seed_is_pinned",)),
    Mutation("seed: digest read big-endian", (
        ("stablerep/seeding.py", 'int.from_bytes(digest, "little")', 'int.from_bytes(digest, "big")'),
    ), ("tests/test_seeding.py::test_image_seed_is_pinned",)),
    Mutation("caption id: digest read little-endian", (
        ("stablerep/captions/normalize.py", 'int.from_bytes(digest, "big")', 'int.from_bytes(digest, "little")'),
    ), ("tests/captions/test_captions.py::test_normalisation_and_stable_ids",)),
    Mutation("shards: commit mark written before the shard", (
        ("stablerep/shards/writer.py",
         "    storage.write_bytes(shard_url(root, index), blob)\n"
         "    storage.write_bytes(mark_url(root, index), json.dumps(mark, indent=1).encode())\n",
         "    storage.write_bytes(mark_url(root, index), json.dumps(mark, indent=1).encode())\n"
         "    storage.write_bytes(shard_url(root, index), blob)\n"),
    ), (f"{T_SHARDS}::test_mark_is_written_after_the_shard",)),
    Mutation("shards: a mark for another config counts as committed (the write is skipped)", (
        ("stablerep/shards/writer.py", 'if mark.get("config_hash") != config_hash:', "if False:"),
    ), (f"{T_SHARDS}::test_committed_shard_is_never_rewritten[local]",)),
    Mutation("manifest: written before the shards are committed", (
        ("stablerep/shards/manifest.py",
         "        if mark is None:\n            raise ShardError(",
         "        if mark is None:\n            continue\n            raise ShardError("),
        ("stablerep/synthesis/worker.py",
         "    with tqdm(total=total,",
         "    result.manifest = finish_dataset(out_root, plans, cfg, backend.lineage())\n    with tqdm(total=total,"),
    ), ("tests/synthesis/test_worker.py::test_interrupted_build_resumes_to_the_same_dataset",)),
    Mutation("manifest: lists uncommitted shards without complaint", (
        ("stablerep/shards/manifest.py",
         "        if mark is None:\n            raise ShardError(",
         "        if mark is None:\n            continue\n            raise ShardError("),
    ), (f"{T_SHARDS}::test_interrupted_shard_is_invisible_and_redone[local]",)),
    Mutation("linear probe: the weakest regularisation chosen", (
        ("stablerep/evaluation/linear_probe.py", "best = max(scores, key=lambda k: (scores[k], k))",
         "best = min(scores)"),
    ), ("tests/evaluation/test_evaluation.py::test_lbfgs_chooses_strong_regularisation_for_noise_features",)),
    Mutation("linear probe: ties go to the weaker regularisation", (
        ("stablerep/evaluation/linear_probe.py", "best = max(scores, key=lambda k: (scores[k], k))",
         "best = max(scores, key=lambda k: (scores[k], -k))"),
    ), (f"{T_CONTRACTS}::test_lbfgs_ties_go_to_the_strongest_regularisation",)),
    Mutation("linear probe: default grid of 12 values", (
        ("stablerep/evaluation/linear_probe.py", "list(np.logspace(-6, 5, 45))", "list(np.logspace(-6, 5, 12))"),
    ), (f"{T_CONTRACTS}::test_lbfgs_default_grid_is_45_log_spaced_values_from_1e_minus_6_to_1e5",)),
    Mutation("kNN: votes not divided by the temperature", (
        ("stablerep/evaluation/knn.py", "(sims / temperature).exp()", "sims.exp()"),
    ), (f"{T_CONTRACTS}::test_knn_votes_are_weighted_by_exp_similarity_over_temperature",
        "tests/evaluation/test_evaluation.py::test_knn_hand_checked")),
    Mutation("kNN: votes multiplied by the temperature", (
        ("stablerep/evaluation/knn.py", "(sims / temperature).exp()", "(sims * temperature).exp()"),
    ), (f"{T_CONTRACTS}::test_knn_votes_are_weighted_by_exp_similarity_over_temperature",
        "tests/evaluation/test_evaluation.py::test_knn_hand_checked")),
    Mutation("augment: grayscale fires with 1 - p", (
        ("stablerep/data/augment.py", "< cfg.grayscale_p", "< 1 - cfg.grayscale_p"),
    ), (f"{T_AUGMENT}::test_each_augmentation_fires_with_its_probability[grayscale-0.2]",)),
    Mutation("augment: colour jitter fires with 1 - p", (
        ("stablerep/data/augment.py", "< cfg.color_jitter_p", "< 1 - cfg.color_jitter_p"),
    ), (f"{T_AUGMENT}::test_each_augmentation_fires_with_its_probability[jitter-0.8]",)),
    Mutation("augment: downsample fires twice as often", (
        ("stablerep/data/augment.py", "< self.cfg.downsample_p", "< 2 * self.cfg.downsample_p"),
    ), (f"{T_AUGMENT}::test_each_augmentation_fires_with_its_probability[downsample-0.05]",)),
    Mutation("checkpoint: sha256 no longer verified (size only)", (
        ("stablerep/checkpoint.py",
         'if len(blob) != meta["bytes"] or hashlib.sha256(blob).hexdigest() != meta["sha256"]:',
         'if len(blob) != meta["bytes"]:'),
    ), ("tests/training/test_loop.py::test_corrupted_checkpoint_is_refused",)),
    Mutation("shard loader: resume skips nothing (restarts the epoch)", (
        ("stablerep/data/shards.py", "if n >= skip:", "if n >= 0:"),
    ), (f"{T_LOADER}::test_batches_resume_exactly_mid_epoch[0]",)),
    Mutation("shard loader: resume drops the partial worker round", (
        ("stablerep/data/shards.py", "ds.skip = [(done // w + (1 if i < done % w else 0)) * bs for i in range(w)]",
         "ds.skip = [(done // w) * bs for i in range(w)]"),
    ), (f"{T_LOADER}::test_batches_resume_exactly_mid_epoch[2]",)),
    Mutation("shard loader: loader workers all read the same stream", (
        ("stablerep/data/shards.py", "worker, workers = (info.id, info.num_workers) if info else (0, 1)",
         "worker, workers = (0, 1)"),
    ), (f"{T_LOADER}::test_ranks_and_workers_partition_the_dataset",)),
    Mutation("shard loader: resume forgets the worker rotation", (
        ("stablerep/data/shards.py", "ds.rotation = done % w", "ds.rotation = 0"),
    ), (f"{T_LOADER}::test_batches_resume_exactly_mid_epoch[2]",)),
    Mutation("linear probe: the official validation split ignored (a split of train used)", (
        (LINEAR, "    if val_x is None:\n        fit_idx, val_idx = stratified_split",
         "    if True:\n        fit_idx, val_idx = stratified_split"),
    ), (f"{T_CONTRACTS}::test_lbfgs_chooses_l2_on_the_official_validation_split_when_it_contradicts_train",)),
    Mutation("linear probe: no refit on train + validation", (
        (LINEAR, "        ax, tx = (t.to(dev) for t in _standardise(all_x, test_x))\n"
                 "        w = fit_logistic(ax, all_y.to(dev), classes, best, max_iter)",
         "        ax, tx = (t.to(dev) for t in _standardise(fit_x, test_x))\n"
         "        w = fit_logistic(ax, fit_y.to(dev), classes, best, max_iter)"),
    ), (f"{T_CONTRACTS}::test_lbfgs_refits_on_train_plus_validation_with_the_chosen_l2",)),
    Mutation("linear probe: the dataset's metric ignored (plain accuracy reported)", (
        (LINEAR, "return ProbeResult(score(_predict(w, tx), test_y, metric), best, scores)",
         "return ProbeResult(score(_predict(w, tx), test_y, \"accuracy\"), best, scores)"),
    ), (f"{T_CONTRACTS}::test_probe_and_knn_report_the_datasets_metric_on_imbalanced_test_classes",)),
    Mutation("kNN: the suite's defaults k = 200, T = 1", (
        (SUITE, "k: int = Field(20, ge=1)", "k: int = Field(200, ge=1)"),
        (SUITE, "temperature: float = Field(0.07, gt=0)", "temperature: float = Field(1.0, gt=0)"),
    ), (f"{T_CONTRACTS}::test_knn_defaults_are_k_20_and_temperature_0_07",
        f"{T_CONTRACTS}::test_protocol_defaults_are_the_papers")),
    Mutation("kNN: the function's defaults k = 200, T = 1", (
        (KNN, "def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, query_x: torch.Tensor, k: int = 20,\n"
              "                temperature: float = 0.07,",
         "def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, query_x: torch.Tensor, k: int = 200,\n"
         "                temperature: float = 1.0,"),
        (KNN, "def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 20, temperature: float = 0.07,",
         "def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 200, temperature: float = 1.0,"),
    ), (f"{T_CONTRACTS}::test_knn_defaults_are_k_20_and_temperature_0_07",)),
    Mutation("few-shot: 10 episodes by default (suite and function)", (
        (SUITE, "episodes: int = Field(600, ge=1)", "episodes: int = Field(10, ge=1)"),
        (FEW_SHOT, "queries: int = 15, episodes: int = 600,", "queries: int = 15, episodes: int = 10,"),
    ), (f"{T_CONTRACTS}::test_few_shot_runs_600_episodes_of_the_test_split",
        f"{T_CONTRACTS}::test_protocol_defaults_are_the_papers")),
    Mutation("few-shot: episodes drawn from the train split", (
        (SUITE, "result = few_shot(test_x, test_y,", "result = few_shot(train_x, train_y,"),
    ), (f"{T_CONTRACTS}::test_few_shot_runs_600_episodes_of_the_test_split",)),
    Mutation("few-shot: an interval of 0", (
        (FEW_SHOT, "1.96 * std / math.sqrt(len(accs))", "0.0"),
    ), (f"{T_CONTRACTS}::test_few_shot_interval_is_1_96_standard_deviations_of_the_episodes_over_root_n",)),
    Mutation("metric: Pets scored by plain accuracy", (
        ("stablerep/data/torchvision_sets.py",
         '{"train": {"split": "trainval"}, "test": {"split": "test"}}, _attr("_labels"),\n'
         '                           _attr("classes"), "mean_per_class"),',
         '{"train": {"split": "trainval"}, "test": {"split": "test"}}, _attr("_labels"),\n'
         '                           _attr("classes")),'),
    ), (f"{T_CONTRACTS}::test_protocol_defaults_are_the_papers",)),
    Mutation("metric: a #metric= spec suffix ignored", (
        ("stablerep/evaluation/datasets.py", 'options = options.model_copy(update={"metric": metric})', "pass"),
    ), ("tests/evaluation/test_datasets.py::test_a_spec_suffix_sets_the_metric_of_any_dataset",)),
    Mutation("lease: the local compare-and-swap removed (the write is unconditional)", (
        (LEASE, "            if self.read()[1] != expected:\n                raise _Conflict",
         "            if False:\n                raise _Conflict"),
    ), (f"{T_LEASE}::test_two_writers_started_at_the_same_moment_exactly_one_wins_each_round[local]",)),
    Mutation("lease: the S3 compare-and-swap removed (no If-None-Match / If-Match)", (
        (LEASE, 'return self._put(data, mode="create")', "return self._put(data)"),
        (LEASE, "return self._put(data, IfMatch=version)", "return self._put(data)"),
    ), (f"{T_LEASE}::test_two_writers_started_at_the_same_moment_exactly_one_wins_each_round[s3]",)),
    Mutation("generator: the two stages' batch streams swapped", (
        (GEN_TRAIN, '{"vae": 1, "unet": 2}[stage]', '{"vae": 2, "unet": 1}[stage]'),
    ), (f"{T_SHIPPED}::test_a_rebuild_repeats_the_committed_first_steps",)),
    Mutation("generator: learning-rate warmup of 100 steps instead of 200", (
        (GEN_TRAIN, "warmup_steps=min(200, steps // 10)", "warmup_steps=min(100, steps // 10)"),
    ), (f"{T_SHIPPED}::test_a_rebuild_repeats_the_committed_first_steps",)),
    Mutation("generator: AdamW's second-moment decay 0.999 instead of 0.99", (
        (GEN_TRAIN, "betas=(0.9, 0.99)", "betas=(0.9, 0.999)"),
    ), (f"{T_SHIPPED}::test_a_rebuild_repeats_the_committed_first_steps",)),
)


@dataclass
class Outcome:
    mutation: str
    tests: list[str]
    caught_by: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    @property
    def caught(self) -> bool:
        return bool(self.caught_by)


class SetupError(Exception):
    """The check cannot run as asked (snippet not found, a listed test not passing unmutated)."""


def copy_repository(target: Path) -> Path:
    """The working tree without .git and caches, under ``target``."""
    dest = target / ROOT.name
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    return dest


def check_snippets(copy: Path, mutations: tuple[Mutation, ...]) -> None:
    """Every original snippet occurs exactly once in its file: a mutation never silently does nothing."""
    problems = []
    for m in mutations:
        for rel, original, _ in m.edits:
            path = copy / rel
            count = path.read_text(encoding="utf-8").count(original) if path.is_file() else -1
            if count != 1:
                where = "file missing" if count < 0 else f"found {count} times"
                problems.append(f"{m.name}: {rel}: snippet {original!r} {where} (it must occur exactly once)")
    if problems:
        raise SetupError("\n".join(problems))


def node_ids_from_junit(report: Path) -> tuple[set[str], set[str]]:
    """(every test case run, those that failed or errored) as pytest node ids."""
    ran, failed = set(), set()
    if not report.exists():
        return ran, failed
    for case in ET.parse(report).getroot().iter("testcase"):
        module, _, rest = case.get("classname", "").partition("::")
        node = f"{module.replace('.', '/')}.py::{case.get('name')}"
        if any(child.tag == "skipped" for child in case):
            continue
        ran.add(node)
        if any(child.tag in ("failure", "error") for child in case):
            failed.add(node)
    return ran, failed


def run_tests(copy: Path, tests: list[str], scratch: Path) -> tuple[int, set[str], set[str], str]:
    """Run ``tests`` in the copy; (exit code, node ids run, node ids failed, output tail)."""
    report = scratch / "junit.xml"
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
           f"--timeout={PER_TEST_TIMEOUT_S}", *tests]
    proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=PER_TEST_TIMEOUT_S * 4)
    ran, failed = node_ids_from_junit(report)
    return proc.returncode, ran, failed, (proc.stdout + proc.stderr)[-1500:]


def matching(requested: str, nodes: set[str]) -> set[str]:
    """Node ids that ``requested`` names (itself, or its parametrised cases)."""
    return {n for n in nodes if n == requested or n.startswith(requested + "[")}


def baseline(copy: Path, mutations: tuple[Mutation, ...], scratch: Path) -> float:
    """Every listed test passes on the unmutated copy; returns the seconds it took."""
    tests = sorted({t for m in mutations for t in m.tests})
    start = time.perf_counter()
    code, ran, failed, tail = run_tests(copy, tests, scratch)
    missing = [t for t in tests if not matching(t, ran)]
    if code != 0 or failed or missing:
        raise SetupError(f"the listed tests must pass unmutated; failed: {sorted(failed)}, not run: {missing}\n{tail}")
    return time.perf_counter() - start


def apply_and_run(copy: Path, mutation: Mutation, scratch: Path) -> Outcome:
    originals = {rel: (copy / rel).read_text(encoding="utf-8") for rel, _, _ in mutation.edits}
    outcome = Outcome(mutation.name, list(mutation.tests))
    try:
        for rel, original, replacement in mutation.edits:
            path = copy / rel
            path.write_text(path.read_text(encoding="utf-8").replace(original, replacement, 1), encoding="utf-8")
        start = time.perf_counter()
        code, ran, failed, tail = run_tests(copy, list(mutation.tests), scratch)
        outcome.seconds = round(time.perf_counter() - start, 1)
    finally:
        for rel, text in originals.items():
            (copy / rel).write_text(text, encoding="utf-8")
    outcome.caught_by = sorted(n for t in mutation.tests for n in matching(t, failed))
    if code != 0 and not outcome.caught_by:  # collection or import error: the suite fails, but say so
        outcome.caught_by = [f"(pytest exit {code} before any listed test failed)"]
        outcome.note = tail
    return outcome


def short_names(nodes: list[str]) -> str:
    """Test names without their file; several parametrised cases of one test as one name and a count."""
    groups: dict[str, list[str]] = {}
    for node in nodes:
        name = node.split("::", 1)[-1]
        groups.setdefault(name.split("[", 1)[0], []).append(name)
    return ", ".join(names[0] if len(names) == 1 else f"{base} ({len(names)} cases)"
                     for base, names in groups.items()) or "-"


def print_table(outcomes: list[Outcome]) -> None:
    rows = [("mutation", "tests run", "caught by", "caught")]
    rows += [(o.mutation, short_names(o.tests), short_names(o.caught_by), "yes" if o.caught else "NO")
             for o in outcomes]
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the mutations whose name contains this text")
    args = parser.parse_args(argv)
    chosen = tuple(m for m in MUTATIONS if not args.only or args.only in m.name)
    if not chosen:
        print(f"error: no mutation name contains {args.only!r}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stablerep-mutation-") as tmp:
        scratch = Path(tmp)
        copy = copy_repository(scratch)
        try:
            check_snippets(copy, chosen)
            base_s = baseline(copy, chosen, scratch)
        except SetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"baseline: {len({t for m in chosen for t in m.tests})} tests pass unmutated ({base_s:.0f} s)",
              file=sys.stderr)
        outcomes = []
        for m in chosen:
            outcomes.append(apply_and_run(copy, m, scratch))
            print(f"{'caught ' if outcomes[-1].caught else 'SURVIVED'}  {m.name} ({outcomes[-1].seconds} s)",
                  file=sys.stderr)
    print_table(outcomes)
    survivors = [o.mutation for o in outcomes if not o.caught]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python benchmarks/mutation_check.py" + (f" --only {args.only!r}" if args.only else ""),
        "python": sys.version.split()[0],
        "baseline_s": round(base_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "mutations": [{"mutation": o.mutation, "tests": o.tests, "caught_by": o.caught_by, "caught": o.caught,
                       "seconds": o.seconds, **({"note": o.note} if o.note else {})} for o in outcomes],
        "survivors": survivors,
    }, indent=1) + "\n")
    print(f"\n{len(outcomes) - len(survivors)}/{len(outcomes)} mutations caught; wrote {RESULTS.relative_to(ROOT)}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
