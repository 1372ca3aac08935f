"""Run under torchrun: each rank computes the losses on its slice of one fixed global batch and
writes its loss values and feature gradients to OUT_DIR/rank{R}.pt (safetensors)."""

import sys

import torch.distributed as dist
from safetensors.torch import save_file

from stablerep.losses import ImageTextLoss, MultiPosConLoss, NTXentLoss
from tests.helpers.global_batch import global_batch


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    b = global_batch()
    n = b["feats"].shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    out = {}

    feats = b["feats"][sl].clone().requires_grad_(True)
    loss = MultiPosConLoss(0.1)(feats, b["labels"][sl])["loss"]
    loss.backward()
    out["multipos_loss"], out["multipos_grad"] = loss.detach().reshape(1), feats.grad

    k = b["z1"].shape[0] // world
    ks = slice(rank * k, (rank + 1) * k)
    z1 = b["z1"][ks].clone().requires_grad_(True)
    z2 = b["z2"][ks].clone().requires_grad_(True)
    loss = NTXentLoss(0.1)(z1, z2)["loss"]
    loss.backward()
    out["ntxent_loss"], out["ntxent_grad"] = loss.detach().reshape(1), z1.grad

    txt = b["txt"][ks].clone().requires_grad_(True)
    img = b["img"][sl].clone().requires_grad_(True)
    loss = ImageTextLoss()(img, b["labels"][sl], txt, b["txt_labels"][ks], b["scale"])["loss"]
    loss.backward()
    out["it_loss"], out["it_grad_img"], out["it_grad_txt"] = loss.detach().reshape(1), img.grad, txt.grad
    save_file({k: v.contiguous() for k, v in out.items()}, f"{out_dir}/rank{rank}.safetensors")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
