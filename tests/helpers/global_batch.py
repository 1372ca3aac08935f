import torch


def global_batch(captions: int = 8, m: int = 3) -> dict[str, torch.Tensor]:
    """A fixed batch shared by the single-process and torchrun sides of the distributed tests.

    Images of a caption are contiguous, as the training loop lays them out; caption ids are hashes.
    """
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(1, 2**60, (captions,), generator=g)
    return {
        "feats": torch.randn(captions * m, 16, generator=g, dtype=torch.float64),
        "labels": ids.repeat_interleave(m),
        "z1": torch.randn(captions, 16, generator=g, dtype=torch.float64),
        "z2": torch.randn(captions, 16, generator=g, dtype=torch.float64),
        "img": torch.randn(captions * m, 16, generator=g, dtype=torch.float64),
        "txt": torch.randn(captions, 16, generator=g, dtype=torch.float64),
        "txt_labels": ids,
        "scale": torch.tensor(2.0, dtype=torch.float64),
    }
