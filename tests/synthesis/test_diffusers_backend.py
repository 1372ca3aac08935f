"""The diffusers backend through diffusers' real code path, on the tiny pipeline, offline."""

import hashlib

import open_clip
import pytest
import torch

from stablerep.errors import ModelNotFoundError
from stablerep.synthesis import GenerationRequest, encode_image
from stablerep.synthesis.diffusers_backend import DiffusersBackend


@pytest.fixture(scope="module")
def backend(tiny_sd):
    return DiffusersBackend(str(tiny_sd), steps=4, resolution=32, guidance=2.0)


def _hashes(images):
    return [hashlib.sha256(encode_image(i, 32)[0]).hexdigest() for i in images]


def test_round_trip_through_from_pretrained(tiny_sd, backend):
    assert (tiny_sd / "model_index.json").is_file()
    assert type(backend.pipe).__name__ == "StableDiffusionPipeline"
    assert backend.scheduler_name == "DDIMScheduler"
    lineage = backend.lineage()
    assert lineage["guidance"] == 2.0 and lineage["steps"] == 4 and lineage["scheduler"] == "DDIMScheduler"


def test_tokenizer_ids_equal_open_clip(backend):
    texts = ["A photo of a cat sitting on a red sofa.", "two golden retrievers, in the snow!"]
    ours = backend.pipe.tokenizer(texts, padding="max_length", max_length=77, truncation=True,
                                  return_tensors="pt").input_ids
    ref = open_clip.tokenize(texts)
    assert len(backend.pipe.tokenizer) == 49408
    for a, b in zip(ours, ref, strict=True):
        keep = b != 0  # open_clip pads with 0, the HF tokenizer with 49407
        assert torch.equal(a[keep], b[keep])


def test_same_seeds_same_bytes_across_batch_sizes(backend):
    reqs = [GenerationRequest(i, text, k, 1000 * i + k)
            for i, text in enumerate(["a red cube", "two dogs in the snow"]) for k in range(3)]
    together = _hashes(backend.generate(reqs))
    singles = _hashes([backend.generate([r])[0] for r in reqs])
    mixed = _hashes(backend.generate(reqs[4:]) + backend.generate(reqs[:4]))
    mixed = mixed[2:] + mixed[:2]
    assert together == singles == mixed
    assert len(set(together)) == len(reqs)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"could not be loaded: looked in .*Hugging Face cache.*downloads off"):
        DiffusersBackend("nobody/no-such-model-xyz", resolution=32)
    with pytest.raises(ModelNotFoundError, match="looked in the folder"):
        DiffusersBackend(str(tmp_path), resolution=32)
