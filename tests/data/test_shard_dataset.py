import pytest
import torch

from stablerep.config import AugmentConfig, load_config
from stablerep.data.augment import BatchPhotometric, build_geometric, prepare_images
from stablerep.data.shards import (
    ShardBatches,
    ShardCaptionDataset,
    build_shard_batches,
    iter_images,
)
from tests.helpers.datasets import write_example_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ds"))
    write_example_dataset(path, n_captions=24, images_per_caption=4, captions_per_shard=8, row_group_rows=8)
    return path


def _labels(ds):
    return [s["label"] for s in ds]


def test_yields_m_distinct_images_per_caption(root):
    ds = ShardCaptionDataset(root, 3, transform=None, shuffle=False)
    samples = list(ds)
    assert len(samples) == 24
    by_id = {}
    for row in iter_images(root, columns=["caption_id", "image_index", "image"]):
        by_id.setdefault(row["caption_id"], []).append(row["image"]["bytes"])
    from stablerep.data.shards import decode

    for s in samples:
        assert s["images"].shape == (3, 3, 64, 64) and s["images"].dtype == torch.uint8
        originals = [decode(b) for b in by_id[s["label"]]]
        matches = [next(i for i, o in enumerate(originals) if torch.equal(o, v)) for v in s["images"]]
        assert len(set(matches)) == 3  # three different generated images of this caption


def test_ranks_and_workers_partition_the_dataset(root):
    all_ids = set(_labels(ShardCaptionDataset(root, 1, shuffle=False)))
    parts = [_labels(ShardCaptionDataset(root, 1, seed=5, rank=r, world_size=3)) for r in range(3)]
    assert sum(len(p) for p in parts) == 24
    assert set().union(*parts) == all_ids
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1:])
    # 3 ranks x 2 loader workers: the 6 streams still hold every caption exactly once
    from torch.utils.data import DataLoader

    streams = [s["label"] for r in range(3) for s in DataLoader(
        ShardCaptionDataset(root, 1, seed=5, rank=r, world_size=3), batch_size=None, num_workers=2)]
    assert sorted(streams) == sorted(all_ids)


def test_epochs_reshuffle_deterministically(root):
    ds = ShardCaptionDataset(root, 1, seed=1, shuffle_buffer=16)
    ds.set_epoch(0)
    e0 = _labels(ds)
    ds.set_epoch(1)
    e1 = _labels(ds)
    again = ShardCaptionDataset(root, 1, seed=1, shuffle_buffer=16)
    again.set_epoch(0)
    assert _labels(again) == e0
    assert sorted(e0) == sorted(e1) and e0 != e1


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_resume_exactly_mid_epoch(root, workers):
    aug = build_geometric(AugmentConfig(), 32)
    make = lambda: ShardBatches(ShardCaptionDataset(root, 2, aug, seed=3), 3, num_workers=workers)  # noqa: E731
    straight = make().iter_from(0)
    reference = [next(straight) for _ in range(9)]  # crosses epoch boundaries
    for start in (1, 4, 7):
        resumed = make().iter_from(start)
        for expected in reference[start:]:
            got = next(resumed)
            assert torch.equal(got["labels"], expected["labels"])
            assert torch.equal(got["images"], expected["images"])


def test_simclr_views_come_from_one_image(root):
    ds = ShardCaptionDataset(root, 2, transform=None, shuffle=False, views_of_one_image=True)
    s = next(iter(ds))
    assert torch.equal(s["images"][0], s["images"][1])  # same image; augmentation makes the views


def test_too_few_images_per_caption_is_clear(root):
    ds = ShardCaptionDataset(root, 5, shuffle=False)
    with pytest.raises(ValueError, match="has 4 images, fewer than images_per_caption=5"):
        next(iter(ds))


def test_build_from_run_config_and_normalise(root):
    run = load_config("tiny_cpu_plus", ["data.captions_per_batch=4", "data.images_per_caption=2"])
    batch = next(iter(build_shard_batches(root, run, rank=0, world_size=1)))
    assert batch["images"].shape == (4, 2, 3, 32, 32) and batch["images"].dtype == torch.uint8
    assert batch["tokens"].shape == (4, run.model.text.context_length)
    g = torch.Generator().manual_seed(0)
    x = prepare_images(batch["images"], BatchPhotometric(run.data.augment), g)
    assert x.shape == batch["images"].shape and x.dtype == torch.float32
    # without augmentation: [0, 255] -> [0, 1] -> ImageNet mean and std per channel
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    expected = (batch["images"].float() / 255 - mean) / std
    assert torch.allclose(prepare_images(batch["images"]), expected, atol=1e-5)


def test_geometric_half_runs_on_uint8():
    geo = build_geometric(AugmentConfig(), 224)
    assert [type(t).__name__ for t in geo.transforms] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    out = geo(torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8))
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
