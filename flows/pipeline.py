"""The end-to-end pipeline: captions -> synthetic and "real" datasets -> encoders -> comparison.

On the embedded defaults (procedural captions and backend, tiny ViTs) it is the offline demo
(`stablerep-pipeline/offline-demo`), the same work as `stablerep demo`, as Prefect tasks.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.dataset import CaptionRequest, DatasetRequest, run_build
from stablerep import storage
from stablerep.demo import (
    DemoConfig,
    dataset_root,
    run_config,
    run_dir,
    synthesis_config,
    trains_on,
)
from tasks.captions import procedural_captions
from tasks.evaluation import compare_encoders
from tasks.training import train_encoder


@flow(name="stablerep-pipeline", log_prints=True)
def stablerep_pipeline(out: str = "runs/pipeline", demo: DemoConfig | None = None,
                       launcher: Literal["subprocess", "inline"] = "subprocess") -> dict[str, Any]:
    """Synthesise, train StableRep / SimCLR / CLIP (and the supervised ceiling) on the same captions under
    one budget, for every seed, and compare them with 95% intervals."""
    cfg = demo or DemoConfig()
    logger = get_run_logger()
    t0 = time.perf_counter()
    source = procedural_captions(storage.join(out, "captions.txt"), cfg.captions, cfg.seed)
    captions = CaptionRequest(source=source, n=cfg.captions, seed=cfg.seed)
    datasets = {}
    for kind in ("synthetic", "real"):
        request = DatasetRequest(root=dataset_root(out, kind), captions=captions,
                                 synthesis=synthesis_config(cfg, kind), executor="inline")
        datasets[kind] = run_build(request)
        logger.info("%s dataset: %s", kind, datasets[kind]["totals"])
    runs: dict[str, dict[int, str]] = {m: {} for m in cfg.training_methods()}
    for seed in cfg.seeds:
        for method in runs:
            directory = run_dir(out, method, seed)
            train_encoder(run_config(cfg, method, seed), dataset_root(out, trains_on(method)), directory,
                          launcher=launcher)
            runs[method][seed] = directory
    extra = {"settings": cfg.model_dump(mode="json"), "datasets": {k: v["root"] for k, v in datasets.items()}}
    summary = compare_encoders(out, cfg, runs, extra=extra)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary
