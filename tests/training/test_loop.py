import json

import fsspec
import pytest
import torch

from stablerep.checkpoint import latest_checkpoint, load_model_weights
from stablerep.config import load_config
from stablerep.data import RandomCaptionBatches
from stablerep.training import CheckpointError, NonFiniteLossError, run_training_loop


def _source(run, **kw):
    context = run.model.text.context_length if run.model.text is not None else None
    return RandomCaptionBatches(run.data.captions_per_batch, run.data.images_per_caption,
                                run.data.image_size, context_length=context, **kw)


def test_tiny_vit_run_lowers_the_loss(tmp_path):
    run = load_config("tiny_cpu", ["train.steps=80", "train.log_every=1", "optim.lr=2e-3"])
    result = run_training_loop(run, _source(run, num_captions=64), str(tmp_path), progress=False)
    losses = [h["loss"] for h in result.history]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.3, (first, last)
    assert (tmp_path / "config.json").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["optim"]["lr"] == 2e-3 and saved["train"]["steps"] == 80


@pytest.mark.parametrize("preset,method", [("tiny_cpu_plus", "stablerep_plus"),
                                           ("tiny_cpu_plus", "clip"), ("tiny_cpu", "simclr")])
def test_other_methods_train(tmp_path, preset, method):
    m = {"clip": 1, "simclr": 2}.get(method, 4)
    run = load_config(preset, ["train.steps=3", f"loss.method={method}", f"data.images_per_caption={m}"])
    result = run_training_loop(run, _source(run), str(tmp_path), progress=False)
    assert result.steps_done == 3 and torch.isfinite(torch.tensor(result.final_loss))
    # the loss the method names was used: its parts are logged, and no other method's
    last = result.history[-1]
    parts = set(last) - {"step", "loss", "lr", "images_per_s"}
    assert parts == {"stablerep_plus": {"multipos", "i2t", "t2i"}, "clip": {"i2t", "t2i"}, "simclr": set()}[method]
    if method == "clip":  # CLIP's loss is the mean of its two directions
        assert last["loss"] == pytest.approx((last["i2t"] + last["t2i"]) / 2, rel=1e-5)
    if method == "stablerep_plus":  # the preset's text weight is 0.5
        assert last["loss"] == pytest.approx(last["multipos"] + 0.5 * (last["i2t"] + last["t2i"]), rel=1e-5)


def test_resume_continues_exactly(tmp_path):
    overrides = ["train.steps=8", "train.log_every=1", "optim.warmup_steps=2"]
    run = load_config("tiny_cpu_plus", overrides)
    straight = run_training_loop(run, _source(run), str(tmp_path / "a"), progress=False)

    first = run_training_loop(run, _source(run), str(tmp_path / "b"), stop_at=5, progress=False)
    assert first.steps_done == 5
    second = run_training_loop(run, _source(run), str(tmp_path / "b"), progress=False)
    assert second.resumed_from == 5
    assert [h["loss"] for h in second.history] == [h["loss"] for h in straight.history[5:]]
    metrics = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in metrics] == list(range(1, 9))


def test_checkpoints_to_an_fsspec_url_and_pruning():
    run = load_config("tiny_cpu", ["train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=2"])
    url = "memory://runs/tiny"
    result = run_training_loop(run, _source(run), url, progress=False)
    assert result.checkpoint == f"{url}/checkpoints/step_00000006"
    fs = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/runs/tiny/checkpoints", detail=False))
    assert names == ["latest.json", "step_00000004.json", "step_00000004.safetensors",
                     "step_00000006.json", "step_00000006.safetensors"]
    assert latest_checkpoint(url) == result.checkpoint


def test_corrupted_checkpoint_is_refused(tmp_path):
    run = load_config("tiny_cpu", ["train.steps=2", "optim.warmup_steps=0"])
    result = run_training_loop(run, _source(run), str(tmp_path), progress=False)
    path = tmp_path / "checkpoints" / "step_00000002.safetensors"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    from stablerep.models import create_model_for_run

    with pytest.raises(CheckpointError, match="corrupted checkpoint"):
        load_model_weights(result.checkpoint, create_model_for_run(run))
    with pytest.raises(CheckpointError, match="corrupted checkpoint"):
        run_training_loop(run.model_copy(update={"train": run.train.model_copy(update={"steps": 4})}),
              _source(run), str(tmp_path), progress=False)


def test_pickle_is_never_loaded(tmp_path):
    """A checkpoint whose tensors file is a pickle (what torch.save writes) is refused, not run."""
    run = load_config("tiny_cpu", ["train.steps=1", "optim.warmup_steps=0"])
    result = run_training_loop(run, _source(run), str(tmp_path), progress=False)
    meta_path = tmp_path / "checkpoints" / "step_00000001.json"
    tensors_path = tmp_path / "checkpoints" / "step_00000001.safetensors"
    torch.save({"x": torch.zeros(1)}, tensors_path)
    meta = json.loads(meta_path.read_text())
    import hashlib

    blob = tensors_path.read_bytes()
    meta.update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())  # even with a matching hash
    meta_path.write_text(json.dumps(meta))
    from stablerep.models import create_model_for_run

    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_model_weights(result.checkpoint, create_model_for_run(run))


class _NaNAfter:
    def __init__(self, inner, bad_step):
        self.inner, self.bad_step = inner, bad_step

    def iter_from(self, step):
        for i, batch in enumerate(self.inner.iter_from(step), start=step):
            if i >= self.bad_step:
                batch = {**batch, "images": batch["images"] * float("nan")}
            yield batch


def test_non_finite_loss_stops_with_clear_error(tmp_path):
    run = load_config("tiny_cpu", ["train.steps=5", "train.checkpoint_every=1"])
    with pytest.raises(NonFiniteLossError, match=r"step 3: loss is nan .*step_00000002"):
        run_training_loop(run, _NaNAfter(_source(run), 2), str(tmp_path), progress=False)


def test_plain_iterables_resume_by_fast_forward(tmp_path):
    run = load_config("tiny_cpu", ["train.steps=4", "train.log_every=1"])
    src = _source(run)
    batches = [src.batch(i) for i in range(3)]  # a finite list: cycled, fast-forwarded on resume
    straight = run_training_loop(run, batches, str(tmp_path / "a"), progress=False)
    run_training_loop(run, batches, str(tmp_path / "b"), stop_at=2, progress=False)
    resumed = run_training_loop(run, batches, str(tmp_path / "b"), progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[2:]]
