import open_clip
import pytest
import torch
from torch import nn

from stablerep.config import ModelConfig, TextConfig
from stablerep.models import CaptionTokenizer, create_backbone, create_model
from stablerep.training import param_groups


def test_tiny_vit_shapes():
    model = create_model("vit_tiny_cpu", img_size=32, head_hidden_dim=32, head_out_dim=16)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out["features"].shape == (4, 16)
    assert model.encode_image(x).shape == (4, 64)  # CLS features of the backbone
    assert "image_embed" not in out


def test_vit_b16_has_the_paper_head():
    model = create_model("vit_base_patch16_224")
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(768, 4096), (4096, 4096), (4096, 256)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.head) == 2
    assert model.num_features == 768


def test_vit_s16_builds():
    assert create_backbone("vit_small_patch16_224").num_features == 384


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'vit_nope'"):
        create_model("vit_nope")


def test_text_tower_and_joint_space():
    cfg = ModelConfig(backbone="vit_tiny_cpu", img_size=32, embed_dim=24,
                      text=TextConfig(width=32, layers=1, heads=2, context_length=16))
    model = create_model(cfg)
    tokens = CaptionTokenizer(16)(["a red cube on grass", "two dogs"])
    out = model(torch.randn(6, 3, 32, 32), tokens)
    assert out["image_embed"].shape == (6, 24)
    assert out["text_embed"].shape == (2, 24)
    assert out["logit_scale"].item() == pytest.approx(torch.log(torch.tensor(1 / 0.07)).item())


def test_clip_model_has_no_mlp_head():
    cfg = ModelConfig(backbone="vit_tiny_cpu", img_size=32, text=TextConfig(width=32, layers=1, heads=2))
    model = create_model(cfg, head=False)
    assert model.head is None
    assert "features" not in model(torch.randn(2, 3, 32, 32))


def test_tokenizer_is_clip_bpe_without_download():
    texts = ["A photo of a cat sitting on a red sofa.", "two golden retrievers, in the snow!"]
    ours = CaptionTokenizer(77)(texts)
    ref = open_clip.tokenize(texts, context_length=77)
    assert torch.equal(ours, ref)
    assert ours[0, 0].item() == 49406  # <|startoftext|>
    assert 49407 in ours[0].tolist()  # <|endoftext|>


def test_tokenizer_truncates_long_captions_keeping_end_of_text():
    tokens = CaptionTokenizer(8)(["word " * 100])
    assert tokens.shape == (1, 8)
    assert tokens[0, -1].item() == 49407


def test_no_weight_decay_on_biases_norms_and_1d():
    model = create_model("vit_tiny_cpu", img_size=32, head_hidden_dim=32, head_out_dim=16)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert all(not n.endswith(".bias") for n in decayed)
    assert "backbone.pos_embed" in skipped and "backbone.cls_token" in skipped
    assert "head.1.weight" in skipped  # BatchNorm weight
    assert "backbone.blocks.0.attn.qkv.weight" in decayed
    assert len(decayed) + len(skipped) == len(list(model.parameters()))
