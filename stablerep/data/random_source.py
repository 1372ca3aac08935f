"""A random-tensor batch source with the training loop's batch contract, for tests and benchmarks.

Each caption of a fixed pool has a random prototype image; its m images are the prototype plus
independent noise, so a contrastive learner can tell captions apart and the loss falls. Batches
are a pure function of (seed, step, rank): ``iter_from(step)`` resumes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from stablerep.seeding import mix_seed


class RandomCaptionBatches:
    """Infinite iterable of ``{"images", "labels", "tokens"}`` batches for one rank.

    ``captions_per_batch`` is global; each of ``world_size`` ranks gets its share of distinct
    captions.
    """

    def __init__(self, captions_per_batch: int, images_per_caption: int, image_size: int,
                 num_captions: int = 512, noise: float = 0.5, context_length: int | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, channels: int = 3) -> None:
        if captions_per_batch % world_size:
            raise ValueError(f"captions_per_batch ({captions_per_batch}) must be divisible by the "
                             f"number of ranks ({world_size})")
        if captions_per_batch > num_captions:
            raise ValueError(f"captions_per_batch ({captions_per_batch}) exceeds num_captions ({num_captions})")
        self.local_captions = captions_per_batch // world_size
        self.captions_per_batch = captions_per_batch
        self.m = images_per_caption
        self.noise = noise
        self.seed, self.rank = seed, rank
        g = torch.Generator().manual_seed(seed)
        self.prototypes = torch.rand(num_captions, channels, image_size, image_size, generator=g)
        # arbitrary 62-bit ids, not positions
        self.caption_ids = torch.randint(1, 2**62, (num_captions,), generator=g, dtype=torch.int64)
        self.tokens = None
        if context_length:
            self.tokens = torch.randint(1, 49405, (num_captions, context_length), generator=g)
            lengths = torch.randint(3, context_length, (num_captions,), generator=g)
            for i, n in enumerate(lengths.tolist()):
                self.tokens[i, 0] = 49406  # start of text
                self.tokens[i, n] = 49407  # end of text (the highest id: CLIP pools here)
                self.tokens[i, n + 1:] = 0

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, step))
        chosen = torch.randperm(len(self.prototypes), generator=g)[: self.captions_per_batch]
        local = chosen[self.rank * self.local_captions:(self.rank + 1) * self.local_captions]
        g_local = torch.Generator().manual_seed(mix_seed(self.seed, step, self.rank))
        base = self.prototypes[local].unsqueeze(1)  # (n, 1, C, H, W)
        noise = torch.randn((len(local), self.m, *base.shape[2:]), generator=g_local)
        out = {"images": base + self.noise * noise, "labels": self.caption_ids[local]}
        if self.tokens is not None:
            out["tokens"] = self.tokens[local]
        return out

    def iter_from(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.batch(step)
            step += 1

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.iter_from(0)
