"""PNG figures for reports and the Prefect UI: a grid of a dataset's images, a loss curve."""

from __future__ import annotations

import io
import json
from typing import Any

from stablerep import storage
from stablerep.shards.rows import iter_images


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sample_grid(root: str, captions: int = 4, images: int = 6, thumb: int = 96) -> bytes:
    """The first ``captions`` captions of dataset ``root`` as rows of up to ``images`` images."""
    from PIL import Image, ImageDraw


    rows: dict[int, list[Any]] = {}
    texts: dict[int, str] = {}
    for row in iter_images(root, ["caption_id", "caption", "image"]):
        cid = row["caption_id"]
        if cid not in rows and len(rows) == captions:
            break
        rows.setdefault(cid, [])
        texts[cid] = row["caption"]
        if len(rows[cid]) < images:
            rows[cid].append(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
    width = max((len(v) for v in rows.values()), default=1)
    label_h = 14
    canvas = Image.new("RGB", (width * thumb, max(1, len(rows)) * (thumb + label_h)), "white")
    pen = ImageDraw.Draw(canvas)
    for r, (cid, imgs) in enumerate(rows.items()):
        y = r * (thumb + label_h)
        pen.text((2, y + 1), texts[cid][: width * thumb // 6], fill=(0, 0, 0))
        for c, img in enumerate(imgs):
            canvas.paste(img.resize((thumb, thumb)), (c * thumb, y + label_h))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    url = storage.join(run_dir, "metrics.jsonl")
    if not storage.exists(url):
        return []
    return [json.loads(line) for line in storage.read_bytes(url).decode().splitlines() if line.strip()]


def loss_curve(records: list[dict[str, Any]], title: str = "training loss") -> bytes:
    """Loss against step (and learning rate on a second axis) from metrics.jsonl records."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["loss"] for r in records], label="loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if records and "lr" in records[0]:
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [r["lr"] for r in records], color="tab:orange", alpha=0.6, label="lr")
        lr_ax.set_ylabel("learning rate")
    fig.tight_layout()
    return figure_png(fig)
