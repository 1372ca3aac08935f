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
from stablerep.demo import TRAINS_ON, DemoConfig, dataset_root, run_config, synthesis_config
from tasks.captions import procedural_captions
from tasks.evaluation import compare_encoders
from tasks.training import train_encoder


@flow(name="stablerep-pipeline", log_prints=True)
def stablerep_pipeline(out: str = "runs/pipeline", demo: DemoConfig | None = None,
                       launcher: Literal["subprocess", "inline"] = "subprocess") -> dict[str, Any]:
    """Synthesise, train StableRep / SimCLR / CLIP on the same captions, and compare them."""
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
    runs = {}
    for method in cfg.methods:
        run_dir = storage.join(out, "runs", method)
        train_encoder(run_config(cfg, method), dataset_root(out, TRAINS_ON[method]), run_dir, launcher=launcher)
        runs[method] = run_dir
    extra = {"settings": cfg.model_dump(mode="json"), "datasets": {k: v["root"] for k, v in datasets.items()}}
    summary = compare_encoders(runs, out, list(cfg.probe_labels), cfg.probe_per_class, extra=extra)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary
