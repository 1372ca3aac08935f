import hashlib
import io
import random

import numpy as np
from PIL import Image

from stablerep.synthesis import (
    GenerationRequest,
    ProceduralBackend,
    encode_image,
    probe_set,
    procedural_captions,
)
from stablerep.world import SHAPES, parse_caption


def _h(img):
    return hashlib.sha256(img.tobytes()).hexdigest()


def test_same_request_same_image_whatever_the_batch():
    b = ProceduralBackend(64)
    reqs = [GenerationRequest(1, "two large red striped stars at the top left on a grass background", k, 10 + k)
            for k in range(3)]
    together = [_h(i) for i in b.generate(reqs)]
    alone = [_h(b.generate([r])[0]) for r in reqs]
    reversed_ = [_h(i) for i in b.generate(reqs[::-1])][::-1]
    assert together == alone == reversed_
    assert len(set(together)) == 3  # different seeds, different images


def test_images_follow_the_caption():
    scene = parse_caption("two small blue dotted rings in the centre on a night background", random.Random(0))
    assert (scene.count, scene.size, scene.colour, scene.texture, scene.shape, scene.position, scene.background) == (
        "two", "small", "blue", "dotted", "ring", "centre", "night")
    img = ProceduralBackend(64).generate([GenerationRequest(0, scene.caption(), 0, 5)])[0]
    pixels = list(img.getdata())
    night = sum(1 for r, g, b in pixels if b > r and b < 110)
    assert night > len(pixels) // 2  # the background is dark blue

    def shape_pixels(image, channel):  # bright in one channel, dim in the other of red and blue
        return sum(1 for p in image.getdata() if p[channel] > 150 and p[2 - channel] < 110)

    red = ProceduralBackend(64).generate([GenerationRequest(0, scene.caption().replace("blue", "red"), 0, 5)])[0]
    assert shape_pixels(img, 2) > 100 and shape_pixels(img, 0) == 0  # blue rings, nothing red
    assert shape_pixels(red, 0) > 100 and shape_pixels(red, 2) == 0  # the colour word changes the rings


def test_caption_generator_and_probe_set():
    caps = procedural_captions(200, seed=3)
    assert len(set(caps)) == 200 and caps == procedural_captions(200, seed=3)
    probe = probe_set(2, seed=1, size=32)
    assert len(probe) == 2 * len(SHAPES)
    assert [p["label"] for p in probe] == [i for i in range(len(SHAPES)) for _ in range(2)]
    assert all(p["label_name"] in p["caption"] for p in probe)


def test_encode_downscales_with_antialias():
    img = ProceduralBackend(128).generate([GenerationRequest(0, "one red circle", 0, 1)])[0]
    data, w, h = encode_image(img, 64, "webp", 90)
    assert (w, h) == (64, 64) and data[:4] == b"RIFF"
    data, w, h = encode_image(img, 32, "png")
    assert data[:4] == b"\x89PNG" and (w, h) == (32, 32)
    # antialiased: each pixel is close to the mean of its 4 x 4 source block (PNG is lossless);
    # point sampling (Image.NEAREST) lands about 4.7 levels away on this image, a filter ~0.9
    small = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    blocks = np.asarray(img, dtype=np.float64).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    nearest = np.asarray(img.resize((32, 32), Image.Resampling.NEAREST), dtype=np.float64)
    assert np.abs(nearest - blocks).mean() > 3  # the image has edges fine enough to tell them apart
    assert np.abs(small - blocks).mean() < 1.5
