"""The fidelity study of the generator: fidelity per guidance scale. Generate through the diffusers
backend (the synthesis path every dataset takes), score with the generator's attribute classifier
(:mod:`stablerep.generator.fidelity`), plot, and show grids of the samples under their captions
(`stablerep generator fidelity`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from stablerep import storage
from stablerep.captions.normalize import caption_id
from stablerep.generator.fidelity import ATTRIBUTE_VALUES, FidelityClassifier, chance, fidelity
from stablerep.generator.shipped import shipped_classifier, shipped_generator
from stablerep.plots import figure_png, pyplot
from stablerep.seeding import image_seed
from stablerep.synthesis.base import GenerationRequest
from stablerep.synthesis.diffusers_backend import DiffusersBackend
from stablerep.world import procedural_captions


def generate(model: str, captions: list[str], guidance: float, seed: int, steps: int | None = None,
             batch_size: int = 64) -> list[Image.Image]:
    """One image per caption through the diffusers backend, seeded per (seed, caption, 0)."""

    defaults = json.loads((Path(model) / "stablerep_generation.json").read_text())
    backend = DiffusersBackend(model, device="cpu", steps=steps or defaults["num_inference_steps"],
                               guidance=guidance, resolution=defaults["resolution"])
    requests = [GenerationRequest(caption_id(c), c, 0, image_seed(seed, caption_id(c), 0)) for c in captions]
    images: list[Image.Image] = []
    for s in range(0, len(requests), batch_size):
        images += backend.generate(requests[s:s + batch_size])
    return images


def captioned_grid(images: list[Image.Image], captions: list[str], columns: int = 8, thumb: int = 96) -> bytes:
    """Images (nearest-neighbour enlarged) under their captions: count size colour / texture shape /
    position (the background shows)."""
    import io

    rows = (len(images) + columns - 1) // columns
    label = 36
    canvas = Image.new("RGB", (columns * thumb, rows * (thumb + label)), "white")
    pen = ImageDraw.Draw(canvas)
    for i, (img, text) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % columns) * thumb, (i // columns) * (thumb + label)
        canvas.paste(img.convert("RGB").resize((thumb, thumb), Image.Resampling.NEAREST), (x, y + label))
        what, _, where = text.split(" on a ")[0].partition(" at the ")
        if not where:
            what, _, where = what.partition(" in the ")
        words = what.split()
        for line, part in enumerate((" ".join(words[:3]), " ".join(words[3:]), where)):
            pen.text((x + 2, y + 1 + 11 * line), part, fill=(0, 0, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def plot_fidelity(results: dict[str, dict[str, float]], reference: dict[str, float]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=100)
    scales = [float(s) for s in results]
    for attribute in ATTRIBUTE_VALUES:
        ax.plot(scales, [results[s][attribute] for s in results], marker="o", label=attribute)
    ax.set_xscale("log", base=2)
    ax.set_xticks(scales, [f"{s:g}" for s in scales])
    ax.set_xlabel("classifier-free guidance scale")
    ax.set_ylabel("attribute shown (classifier)")
    ax.set_ylim(0, 1)
    ax.set_title("Fidelity of generated images to their captions")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return figure_png(fig)


def fidelity_study(out: str, model: str | None, scales: list[float], n_captions: int = 256, seed: int = 0,
                   classifier_path: str | None = None) -> dict:
    """Fidelity at each guidance scale on ``n_captions`` fresh captions of the grammar; writes
    OUT/fidelity.json, OUT/fidelity.png and OUT/samples-w{scale}.png."""
    model = str(model or shipped_generator())
    classifier = FidelityClassifier.load(classifier_path or shipped_classifier())
    rng = random.Random(seed + 31)
    captions = rng.sample(procedural_captions(min(20_000, 4 * n_captions), seed=seed + 31), n_captions)
    results: dict[str, dict[str, float]] = {}
    for w in scales:
        images = generate(model, captions, w, seed)
        results[f"{w:g}"] = fidelity(classifier, images, captions)
        storage.write_bytes(storage.join(out, f"samples-w{w:g}.png"), captioned_grid(images[:32], captions[:32]))
    summary = {"model": model, "captions": n_captions, "seed": seed, "fidelity": results,
               "classifier_on_real_renders": classifier.heldout, "chance": chance()}
    storage.write_bytes(storage.join(out, "fidelity.png"), plot_fidelity(results, classifier.heldout))
    storage.write_bytes(storage.join(out, "fidelity.json"), json.dumps(summary, indent=2).encode())
    return summary
