"""The supervised ceiling trains through the same loop, loader and checkpoints as every method,
with targets read from the procedural captions."""

import torch

from stablerep.captions.sample import sample_captions, write_captions
from stablerep.config import SynthesisConfig, load_config
from stablerep.data.shards import build_shard_batches
from stablerep.evaluation.encoders import load_run
from stablerep.synthesis import build_dataset, create_backend
from stablerep.training import train
from stablerep.world import ATTRIBUTES, caption_targets, procedural_captions


def test_supervised_learns_colour_from_caption_targets(tmp_path):
    source = tmp_path / "captions.txt"
    source.write_text("\n".join(procedural_captions(128, seed=1)) + "\n")
    root = str(tmp_path / "ds")
    write_captions(root, sample_captions(str(source), 128, 0, progress=False))
    syn = SynthesisConfig(backend="procedural", images_per_caption=2, captions_per_shard=64, resolution=64,
                          image_size=32, image_format="png")
    build_dataset(root, root, syn, create_backend(syn), progress=False)
    run = load_config("tiny_cpu", ["loss.method=supervised", "data.images_per_caption=1",
                                   "data.captions_per_batch=32", "train.steps=120", "train.log_every=10",
                                   "optim.lr=2e-3"])
    batches = build_shard_batches(root, run)
    batch = next(batches.iter_from(0))
    assert batch["targets"].shape == (32, 2)
    assert batch["targets"][0].tolist() == caption_targets(batch["captions"][0])
    result = train(run, batches, str(tmp_path / "run"), progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"] - 0.3, result.history
    recent = [h["accuracy_colour"] for h in result.history[-3:]]
    assert sum(recent) / 3 > 0.25, result.history  # chance is 1/8 (and colour jitter blurs the labels)
    model, cfg, identity = load_run(str(tmp_path / "run"))
    assert model.head[-1].out_features == len(ATTRIBUTES["shape"]) + len(ATTRIBUTES["colour"])
    assert identity.startswith("run:") and torch.isfinite(next(model.parameters())).all()
