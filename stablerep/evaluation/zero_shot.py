"""Zero-shot classification for encoders with a text tower (CLIP, StableRep+): each class is the
mean of its prompts' text embeddings; an image takes the class most cosine-similar to it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from stablerep.evaluation.metrics import score

TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a photo of the {}.",
             "a rendering of a {}.", "a close-up photo of a {}.")


@torch.no_grad()
def class_embeddings(classes: list[str], tokenize: Callable[[list[str]], torch.Tensor],
                     encode_text: Callable[[torch.Tensor], torch.Tensor],
                     templates: tuple[str, ...] = TEMPLATES, device: str | torch.device = "cpu") -> torch.Tensor:
    """(C, E): per class, the normalised mean of its normalised prompt embeddings."""
    out = []
    for name in classes:
        tokens = tokenize([t.format(name) for t in templates]).to(device)
        z = F.normalize(encode_text(tokens).float(), dim=-1).mean(0)
        out.append(F.normalize(z, dim=-1))
    return torch.stack(out).cpu()


def zero_shot_accuracy(image_embed: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor,
                       metric: str = "accuracy") -> float:
    pred = (F.normalize(image_embed.float(), dim=-1) @ classifier.T).argmax(1)
    return score(pred, labels, metric)
