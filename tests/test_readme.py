"""The README's own-loop example runs as written (on the tiny ViT, to stay fast)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def test_own_loop_example_runs():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Use the library in your own loop\n\n```python\n(.*?)```", text, re.S).group(1)
    assert 'create_model("vit_base_patch16_224")' in block
    small = block.replace('"vit_base_patch16_224"', '"vit_tiny_cpu", img_size=32').replace("224, 224", "32, 32")
    scope: dict = {}
    exec(compile(small, str(README), "exec"), scope)
    assert torch.isfinite(scope["loss"]).item()
    assert scope["features"].shape == (48, 256)
