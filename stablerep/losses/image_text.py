"""Image-text contrastive losses: CLIP, and StableRep+'s multi-positive variant."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stablerep.distributed import gather_no_grad, gather_with_grad
from stablerep.losses.multipos import MultiPosConLoss, full_precision, multi_positive_cross_entropy


class ImageTextLoss(nn.Module):
    """Symmetric image-text loss where a text may have several images.

    Call as ``loss_fn(image_embed, image_labels, text_embed, text_labels, logit_scale)`` with
    image_embed (N, E), text_embed (T, E) and integer caption labels. Each image has its caption's
    text as its one positive (image->text cross-entropy); each text has all images of its caption
    as positives (multi-positive cross-entropy, text->image). With one image per text this is
    exactly CLIP's loss. ``logit_scale`` is the learnable log-scale; it is clamped to
    [0, max_logit_scale] before use. Returns ``{"loss", "i2t", "t2i"}``.
    """

    def __init__(self, max_logit_scale: float = 4.605170185988092) -> None:
        super().__init__()
        self.max_logit_scale = max_logit_scale

    def forward(
        self,
        image_embed: torch.Tensor,
        image_labels: torch.Tensor,
        text_embed: torch.Tensor,
        text_labels: torch.Tensor,
        logit_scale: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        img = F.normalize(full_precision(image_embed), dim=-1)  # (N, E)
        txt = F.normalize(full_precision(text_embed), dim=-1)  # (T, E)
        all_img, _ = gather_with_grad(img)  # (GN, E)
        all_txt, _ = gather_with_grad(txt)  # (GT, E)
        all_img_labels = gather_no_grad(image_labels)
        all_txt_labels = gather_no_grad(text_labels)
        scale = full_precision(logit_scale).clamp(0, self.max_logit_scale).exp()

        i2t_logits = scale * img @ all_txt.T  # (N, GT)
        i2t_pos = (image_labels[:, None] == all_txt_labels[None, :]).float()
        t2i_logits = scale * txt @ all_img.T  # (T, GN)
        t2i_pos = (text_labels[:, None] == all_img_labels[None, :]).float()
        i2t = multi_positive_cross_entropy(i2t_logits, i2t_pos)
        t2i = multi_positive_cross_entropy(t2i_logits, t2i_pos)
        return {"loss": (i2t + t2i) / 2, "i2t": i2t, "t2i": t2i}


class ClipLoss(ImageTextLoss):
    """CLIP's symmetric InfoNCE: one image per text. Same call as :class:`ImageTextLoss`."""


class StableRepPlusLoss(nn.Module):
    """StableRep+: ``L_multipos + text_weight * (L_i2t + L_t2i)`` (text_weight 0.5 in the paper).

    Call as ``loss_fn(features, image_embed, image_labels, text_embed, text_labels, logit_scale)``.
    Returns ``{"loss", "multipos", "i2t", "t2i"}``.
    """

    def __init__(self, temperature: float = 0.1, text_weight: float = 0.5,
                 max_logit_scale: float = 4.605170185988092) -> None:
        super().__init__()
        self.multipos = MultiPosConLoss(temperature)
        self.image_text = ImageTextLoss(max_logit_scale)
        self.text_weight = text_weight

    def forward(self, features, image_embed, image_labels, text_embed, text_labels, logit_scale):
        mp = self.multipos(features, image_labels)["loss"]
        it = self.image_text(image_embed, image_labels, text_embed, text_labels, logit_scale)
        loss = mp + self.text_weight * (it["i2t"] + it["t2i"])
        return {"loss": loss, "multipos": mp, "i2t": it["i2t"], "t2i": it["t2i"]}
