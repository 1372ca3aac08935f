"""The evaluation suite: every encoder scored on every dataset by the paper's protocols.

One function, :func:`run_evaluation`, serves `stablerep evaluate`, the `evaluate-encoders`
Prefect deployment and the experiments. It indexes every dataset, checks that each class has the
images its protocols need, and loads every encoder before any image is encoded (so a bad spec
fails at once), extracts frozen features through the cache, runs
the protocols, and writes OUT/summary.json (last), results.md and results.png.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from stablerep.data.labelled import DatasetOptions, LabelledDataset
from stablerep.devices import resolve_device
from stablerep.errors import DatasetError
from stablerep.evaluation.datasets import load_labelled
from stablerep.evaluation.encoders import Encoder, load_encoder
from stablerep.evaluation.features import (
    FeatureCache,
    SplitFeatures,
    default_cache_dir,
    encode_split,
)
from stablerep.evaluation.few_shot import few_shot
from stablerep.evaluation.knn import knn_accuracy
from stablerep.evaluation.linear_probe import lbfgs_probe, sgd_probe
from stablerep.evaluation.report import write_report
from stablerep.evaluation.requirements import check_class_counts
from stablerep.evaluation.zero_shot import TEMPLATES, class_embeddings, zero_shot_accuracy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LinearProbeSettings(_Strict):
    enabled: bool = True
    l2_values: int = Field(45, ge=1, description="L2 strengths tried, log-spaced in 1e-6..1e5 (the paper: 45)")
    max_iter: int = Field(1000, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=1, description="validation share of train when no official split")


class KnnSettings(_Strict):
    enabled: bool = True
    k: int = Field(20, ge=1)
    temperature: float = Field(0.07, gt=0)


class FewShotSettings(_Strict):
    enabled: bool = True
    ways: int = Field(5, ge=2)
    shots: list[int] = Field(default_factory=lambda: [1, 5])
    queries: int = Field(15, ge=1, description="query images per class per episode")
    episodes: int = Field(600, ge=1)


class ZeroShotSettings(_Strict):
    enabled: bool = True
    templates: list[str] = Field(default_factory=lambda: list(TEMPLATES))


class SgdProbeSettings(_Strict):
    """The ImageNet protocol (off by default: it is for large sets)."""

    enabled: bool = False
    epochs: int = Field(90, ge=1)
    batch_size: int = Field(1024, ge=1)
    lrs: list[float] = Field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    batch_norm: bool = Field(False, description="BatchNorm without affine before the linear layer")


class ProtocolSettings(_Strict):
    linear_probe: LinearProbeSettings = Field(default_factory=LinearProbeSettings)
    knn: KnnSettings = Field(default_factory=KnnSettings)
    few_shot: FewShotSettings = Field(default_factory=FewShotSettings)
    zero_shot: ZeroShotSettings = Field(default_factory=ZeroShotSettings)
    linear_probe_sgd: SgdProbeSettings = Field(default_factory=SgdProbeSettings)


class FeatureSettings(_Strict):
    batch_size: int = Field(256, ge=1)
    workers: int | None = Field(None, ge=0, description="loader workers (default: 0 for small sets)")
    device: str = "auto"
    precision: str = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU")
    cache: str | None = Field(default_factory=default_cache_dir, description="feature cache (null: none)")


class DatasetEntry(DatasetOptions):
    spec: str = Field(description="imagefolder:PATH, parquet:PATH, torchvision:NAME:ROOT or procedural:LABEL, "
                                  "optionally ending in #metric=accuracy or #metric=mean_per_class")

    def options(self) -> DatasetOptions:
        return DatasetOptions.model_validate(self.model_dump(exclude={"spec"}))


def dataset_short_forms(value: Any) -> Any:
    """``{name: "KIND:..."}`` as ``{name: {"spec": "KIND:..."}}``: a suite's datasets given as bare specs."""
    if isinstance(value, dict):
        return {k: {"spec": v} if isinstance(v, str) else v for k, v in value.items()}
    return value


class EvalSuite(_Strict):
    """What to evaluate: datasets (name -> spec or options), encoders (name -> spec), protocols."""

    datasets: dict[str, DatasetEntry] = Field(default_factory=dict)
    encoders: dict[str, str] = Field(default_factory=dict)
    protocols: ProtocolSettings = Field(default_factory=ProtocolSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    seed: int = Field(0, description="validation splits and few-shot episodes")

    @field_validator("datasets", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return dataset_short_forms(value)


def load_suite(path: str) -> EvalSuite:
    """A suite YAML file (the fields of :class:`EvalSuite`)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"suite file not found: {path}")
    try:
        tree = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return EvalSuite.model_validate(tree)


def _merge_fields(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge_fields(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def merged_suite(suite_file: str | None = None, overrides: dict[str, Any] | None = None,
                 skip_bad_images: bool = False) -> EvalSuite:
    """The suite a run evaluates: the suite file's (or the defaults), with ``overrides`` on top.

    ``datasets`` and ``encoders`` merge by name: an entry given replaces the file's entry of that
    name, and the file's others stay. Every other section (``protocols``, ``features``, ``seed``)
    merges field by field, so ``{"protocols": {"knn": {"k": 10}}}`` changes k and keeps the rest.
    ``skip_bad_images`` sets it on every dataset. `stablerep evaluate`, the `evaluate-encoders`
    flow and the experiments all build their suite here."""
    base = (load_suite(suite_file) if suite_file else EvalSuite()).model_dump()
    overrides = dict(overrides or {})
    named = {key: dataset_short_forms(overrides.pop(key)) if key == "datasets" else overrides.pop(key)
             for key in ("datasets", "encoders") if key in overrides}
    tree = _merge_fields(base, overrides)
    for key, entries in named.items():
        tree[key] = {**tree[key], **entries}
    if skip_bad_images:
        for entry in tree["datasets"].values():
            entry["skip_bad_images"] = True
    return EvalSuite.model_validate(tree)


def check_datasets(entries: dict[str, DatasetEntry], protocols: ProtocolSettings | dict[str, Any]
                   ) -> dict[str, LabelledDataset]:
    """Index every dataset (no image decoded) and check that each holds the images per class
    that the enabled protocols need (stablerep.evaluation.requirements); a DatasetError names the
    dataset, the classes short of images and what the protocols need."""
    protocols = ProtocolSettings.model_validate(protocols) if isinstance(protocols, dict) else protocols
    datasets = {}
    for name, entry in entries.items():
        datasets[name] = load_labelled(name, entry.spec, entry.options())
        check_class_counts(name, datasets[name], protocols)
    return datasets


def _features(encoder: Encoder, dataset: LabelledDataset, split: str, suite: EvalSuite, cache: FeatureCache,
              skip: bool, stats: dict[str, int], on_images) -> SplitFeatures:
    data = dataset.splits()[split]
    key = cache.key(encoder.identity, dataset.fingerprint, split, encoder.transform, skip)
    found = cache.get(key)
    if found is not None:
        stats["cached_splits"] += 1
        on_images(len(data))
        return found
    f = suite.features
    value = encode_split(encoder.model, data, encoder.transform, device=f.device, batch_size=f.batch_size,
                         workers=f.workers, precision=f.precision, skip_bad_images=skip, progress=on_images)
    stats["encoded_images"] += len(data)
    cache.put(key, value, {"encoder": encoder.spec, "dataset": dataset.spec, "split": split})
    return value


def _xy(feats: SplitFeatures, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return feats.features, torch.as_tensor(labels)[feats.keep]


def score_encoder(dataset: LabelledDataset, encoder: Encoder, feats: dict[str, SplitFeatures],
                  protocols: ProtocolSettings, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Every enabled protocol on one encoder's features of one dataset. A protocol the dataset
    cannot support is ``None`` with its reason under ``not_applicable``."""
    splits = dataset.splits()
    train_x, train_y = _xy(feats["train"], splits["train"].labels)
    test_x, test_y = _xy(feats["test"], splits["test"].labels)
    val_x = val_y = None
    if "val" in feats:
        val_x, val_y = _xy(feats["val"], splits["val"].labels)
    n_classes, metric = len(dataset.classes), dataset.metric
    out: dict[str, Any] = {"metric": metric, "train_images": len(train_y), "test_images": len(test_y)}
    na: dict[str, str] = {}
    seconds: dict[str, float] = {}
    lp = protocols.linear_probe
    if lp.enabled:
        t0 = time.perf_counter()
        probe = lbfgs_probe(train_x, train_y, test_x, test_y, val_x=val_x, val_y=val_y,
                            val_fraction=lp.val_fraction, l2_grid=list(np.logspace(-6, 5, lp.l2_values)),
                            max_iter=lp.max_iter, seed=seed, metric=metric, num_classes=n_classes, device=device)
        out.update(linear_probe=probe.accuracy, linear_probe_l2=probe.best)
        seconds["linear_probe"] = time.perf_counter() - t0
    sgd = protocols.linear_probe_sgd
    if sgd.enabled:
        t0 = time.perf_counter()
        fit_x = train_x if val_x is None else torch.cat([train_x, val_x])
        fit_y = train_y if val_y is None else torch.cat([train_y, val_y])
        probe = sgd_probe(fit_x, fit_y, test_x, test_y, lrs=tuple(sgd.lrs), epochs=sgd.epochs,
                          batch_size=sgd.batch_size, batch_norm=sgd.batch_norm, seed=seed, metric=metric,
                          num_classes=n_classes, device=device)
        out.update(linear_probe_sgd=probe.accuracy, linear_probe_sgd_lr=probe.best)
        seconds["linear_probe_sgd"] = time.perf_counter() - t0
    if protocols.knn.enabled:
        out["knn"] = knn_accuracy(train_x, train_y, test_x, test_y, k=protocols.knn.k,
                                  temperature=protocols.knn.temperature, metric=metric, num_classes=n_classes)
    fs = protocols.few_shot
    for shots in fs.shots if fs.enabled else []:
        key = f"few_shot_{fs.ways}way_{shots}shot"
        try:
            result = few_shot(test_x, test_y, n_way=fs.ways, k_shot=shots, queries=fs.queries,
                              episodes=fs.episodes, seed=seed)
            out[key], out[f"{key}_ci95"], out[f"{key}_episodes"] = result.accuracy, result.ci95, result.episodes
        except ValueError as exc:
            out[key], na[key] = None, f"test split: {exc}"
    if protocols.zero_shot.enabled:
        if encoder.text is None or feats["test"].embed is None:
            na["zero_shot"] = "the encoder has no text tower"
        elif not dataset.named_classes:
            na["zero_shot"] = "the dataset's classes have no names (give class_names)"
        else:
            classifier = class_embeddings(dataset.classes, encoder.text.tokenize, encoder.text.encode,
                                          tuple(protocols.zero_shot.templates), _model_device(encoder))
            out["zero_shot"] = zero_shot_accuracy(feats["test"].embed, test_y, classifier, metric)
    out["not_applicable"] = na
    out["seconds"] = seconds
    return out


def _model_device(encoder: Encoder) -> torch.device:
    return next(encoder.model.parameters()).device


def _probe_device(setting: str) -> str:
    return str(resolve_device(setting))


def run_evaluation(suite: EvalSuite, out: str | None = None, progress: bool = True,
                   on_step=None) -> dict[str, Any]:
    """Score every encoder of ``suite`` on every dataset; write the report under ``out``.

    Returns the summary: ``results[dataset][encoder][metric]`` (accuracies in [0, 1]; ``None``
    where a protocol does not apply, with the reason under ``not_applicable``), ``datasets``,
    ``encoders``, ``settings``, ``timings_s`` and ``cache`` (splits found, images encoded).
    ``on_step(message)`` is called after each (dataset, encoder) pair.
    """

    if not suite.datasets:
        raise DatasetError("nothing to evaluate on: give at least one dataset (--dataset NAME=SPEC or a suite file)")
    if not suite.encoders:
        raise ValueError("nothing to evaluate: give at least one encoder (--encoder NAME=SPEC or a suite file)")
    t_start = time.perf_counter()
    datasets = check_datasets(suite.datasets, suite.protocols)
    encoders = {name: load_encoder(name, spec) for name, spec in suite.encoders.items()}
    t_loaded = time.perf_counter()
    cache = FeatureCache(suite.features.cache)
    stats = {"cached_splits": 0, "encoded_images": 0}
    total = sum(len(split) for d in datasets.values() for split in d.splits().values()) * len(encoders)
    results: dict[str, dict[str, Any]] = {}
    device = _probe_device(suite.features.device)
    timings: dict[str, float] = {"load": round(t_loaded - t_start, 3)}
    with tqdm(total=total, desc="evaluate", unit="img", disable=None if progress else True) as bar:
        for dname, dataset in datasets.items():
            results[dname] = {}
            for ename, encoder in encoders.items():
                bar.set_postfix_str(f"{dname}: {ename}")
                skip = suite.datasets[dname].skip_bad_images
                t0 = time.perf_counter()
                feats = {split: _features(encoder, dataset, split, suite, cache, skip, stats, bar.update)
                         for split in dataset.splits()}
                t1 = time.perf_counter()
                scored = score_encoder(dataset, encoder, feats, suite.protocols, suite.seed, device)
                scored["seconds"]["features"] = t1 - t0
                skipped = sum(len(f.skipped) for f in feats.values())
                if skipped:
                    scored["skipped_images"] = skipped
                results[dname][ename] = scored
                timings[f"{dname}/{ename}"] = round(time.perf_counter() - t0, 3)
                if on_step:
                    on_step(f"{dname}: {ename}")
    timings["total"] = round(time.perf_counter() - t_start, 3)
    summary = {"results": results,
               "datasets": {n: d.describe() for n, d in datasets.items()},
               "encoders": {n: e.describe() for n, e in encoders.items()},
               "settings": suite.model_dump(mode="json"), "timings_s": timings, "cache": stats}
    if out is not None:
        summary["report"] = write_report(out, summary)
    return summary
