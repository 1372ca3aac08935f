"""The supervised ceiling trains through the same loop, loader and checkpoints as every method,
with targets read from the procedural captions."""

import torch

from stablerep.captions.sample import sample_captions, write_captions
from stablerep.config import SynthesisConfig, load_config
from stablerep.data.shards import build_shard_batches
from stablerep.evaluation.encoders import load_run
from stablerep.synthesis import create_backend, synthesize_dataset
from stablerep.training import run_training_loop
from stablerep.world import ATTRIBUTES, caption_targets, procedural_captions, run_targets


def test_supervised_learns_colour_from_caption_targets(tmp_path):
    source = tmp_path / "captions.txt"
    source.write_text("\n".join(procedural_captions(128, seed=1)) + "\n")
    root = str(tmp_path / "ds")
    write_captions(root, sample_captions(str(source), 128, 0, progress=False))
    syn = SynthesisConfig(backend="procedural", images_per_caption=2, captions_per_shard=64, resolution=64,
                          image_size=32, image_format="png")
    synthesize_dataset(root, root, syn, create_backend(syn), progress=False)
    run = load_config("tiny_cpu", ["loss.method=supervised", "data.images_per_caption=1",
                                   "data.captions_per_batch=32", "train.steps=120", "train.log_every=10",
                                   "optim.lr=2e-3"])
    batches = build_shard_batches(root, run, targets=run_targets(run))
    batch = next(batches.iter_from(0))
    assert batch["targets"].shape == (32, 2)
    assert batch["targets"][0].tolist() == caption_targets(batch["captions"][0])
    result = run_training_loop(run, batches, str(tmp_path / "run"), progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"] - 0.3, result.history
    recent = [h["accuracy_colour"] for h in result.history[-3:]]
    assert sum(recent) / 3 > 0.25, result.history  # chance is 1/8 (and colour jitter blurs the labels)
    model, cfg, identity = load_run(str(tmp_path / "run"))
    assert model.head[-1].out_features == len(ATTRIBUTES["shape"]) + len(ATTRIBUTES["colour"])
    assert identity.startswith("run:") and torch.isfinite(next(model.parameters())).all()


def test_the_core_takes_the_label_space_as_an_argument(tmp_path):
    """Models, losses and the loader know no label space of their own: the supervised method
    refuses to build without one, and builds with the one given (its class counts, its targets)."""
    import pytest

    from stablerep.losses import create_loss
    from stablerep.models import create_model_for_run

    run = load_config("tiny_cpu", ["loss.method=supervised", "data.images_per_caption=1"])
    with pytest.raises(ValueError, match="needs target_classes"):
        create_model_for_run(run)
    with pytest.raises(ValueError, match="needs target_classes"):
        create_loss(run.loss)
    with pytest.raises(ValueError, match="needs targets"):
        build_shard_batches(str(tmp_path), run)
    model = create_model_for_run(run, {"shape": 3, "colour": 5})
    assert model.head[-1].out_features == 8
    loss = create_loss(run.loss, {"shape": 3, "colour": 5})
    out = loss({"features": torch.zeros(2, 8)}, {"targets": torch.tensor([[2, 4], [0, 0]]), "labels": torch.tensor([0, 1]),
                                                  "images": torch.zeros(2, 1, 3, 4, 4)})
    assert torch.isfinite(out["loss"])
    targets = run_targets(run)
    assert targets.classes == {"shape": len(ATTRIBUTES["shape"]), "colour": len(ATTRIBUTES["colour"])}
    caption = procedural_captions(1, seed=3)[0]
    assert targets(caption) == caption_targets(caption)
