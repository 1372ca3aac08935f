"""Prefect's overhead per shard task, as a share of the shard's own work, at the default shard size.

For each shard the same work runs twice on fresh dataset roots: (a) `synthesize_shard` called
directly, (b) the `synthesize-shards` Prefect task inside a flow (task run creation, state
changes, retries bookkeeping, logging, result handling). Overhead = (b) - (a), timed from the flow
around each task call. The subprocess executor's extra cost (a child interpreter per batch, for a
timeout that really kills) is reported separately. Runs against a temporary Prefect server.

    python benchmarks/prefect_overhead.py [--shards 3] [--captions-per-shard 100] [--images-per-caption 10]

Results: benchmarks/results/prefect_overhead-cpu.json (``ratio``: shards per second through the
Prefect task / through the direct call; ``overhead_share``: Prefect's seconds / the shard's work).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import ResultFile  # noqa: E402

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--captions-per-shard", type=int, default=100, help="SynthesisConfig default: 100")
    parser.add_argument("--images-per-caption", type=int, default=10, help="SynthesisConfig default: 10")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--subprocess", action="store_true", help="also time the subprocess executor")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks/results")
    args = parser.parse_args()
    result = ResultFile("prefect_overhead", torch.device("cpu"), vars(args), args.out_dir)

    from prefect import flow

    from stablerep.captions import sample_captions, write_captions
    from stablerep.config import SynthesisConfig
    from stablerep.synthesis import create_backend, load_plan, procedural_captions, synthesize_shard
    from tasks.synthesis import synthesize_shards

    cfg = SynthesisConfig(backend="procedural", captions_per_shard=args.captions_per_shard,
                          images_per_caption=args.images_per_caption, resolution=args.resolution)
    tmp = tempfile.mkdtemp(prefix="prefect-overhead-")
    n = args.shards * args.captions_per_shard
    source = os.path.join(tmp, "captions.txt")
    with open(source, "w") as f:
        f.write("\n".join(procedural_captions(n, seed=0)) + "\n")
    roots = {arm: os.path.join(tmp, arm) for arm in ("direct", "task", "subprocess")}
    for root in roots.values():
        write_captions(root, sample_captions(source, n, progress=False))
    backend = create_backend(cfg)
    plans = load_plan(roots["direct"], cfg)
    for root in roots.values():
        load_plan(root, cfg)

    @flow(name="prefect-overhead")
    def measure(mode: str, root: str) -> list[tuple[float, float]]:
        out = []
        for plan in plans:
            t0 = time.perf_counter()
            result = synthesize_shards.submit(root, cfg, [plan.index], mode=mode).result()
            out.append((time.perf_counter() - t0, result["seconds"]))
        return out

    direct = []
    for plan in plans:
        t0 = time.perf_counter()
        synthesize_shard(roots["direct"], plan, backend, cfg)
        direct.append(time.perf_counter() - t0)
    task = measure("inline", roots["task"])
    rows = [("direct call (baseline)", statistics.median(direct), 0.0)]
    wall = statistics.median(w for w, _ in task)
    inner = statistics.median(s for _, s in task)
    rows.append(("Prefect task, inline", wall, wall - inner))
    if args.subprocess:
        sub = measure("subprocess", roots["subprocess"])
        rows.append(("Prefect task, subprocess", statistics.median(w for w, _ in sub),
                     statistics.median(w for w, _ in sub) - statistics.median(direct)))
    images = args.captions_per_shard * args.images_per_caption
    print(f"shard: {args.captions_per_shard} captions x {args.images_per_caption} images = {images} images "
          f"(procedural, {args.resolution} px); {args.shards} shards per arm; medians")
    print(f"{'arm':28s} {'s/shard':>9s} {'overhead s':>11s} {'share of work':>14s}")
    base = statistics.median(direct)
    for name, seconds, overhead in rows:
        print(f"{name:28s} {seconds:9.2f} {overhead:11.3f} {100 * overhead / base:13.2f}%")
    print(f"ratio task/direct: {wall / base:.4f}   Prefect overhead per shard task: "
          f"{wall - inner:.3f} s = {100 * (wall - inner) / inner:.2f}% of the shard's work (goal < 2%)")
    path = result.finish(
        arms={name: {"s_per_shard": seconds, "overhead_s": overhead} for name, seconds, overhead in rows},
        ratio=base / wall, images_per_s=images / wall, overhead_s=wall - inner,
        overhead_share=(wall - inner) / inner, shard_work_s=inner,
        subprocess_extra_s=(rows[2][2] if args.subprocess else None))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
