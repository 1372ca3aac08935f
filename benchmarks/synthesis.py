"""Synthesis throughput: our backend against the call a careful diffusers user writes, same run.

Ours: DiffusersBackend (per-image seeded generators, batches mixing captions, DDIM, channels_last
UNet and fp16 on CUDA, optional torch.compile). Baseline: the documented pipeline call,
`pipe(prompt, num_images_per_prompt=K, generator=torch.Generator().manual_seed(s), ...)` with the
same scheduler, steps, guidance and size, fp16 on CUDA with its default attention. Both load the
same saved pipeline: the tiny architecture, or `--arch sd15`, the real SD v1.5 architecture with
random weights (throughput does not depend on weight values). On CUDA it prints the UNet's FLOPs
utilisation: the SD v1.5 UNet is 1.354 TFLOP per guided step at 512 px.

    python benchmarks/synthesis.py --arch tiny --captions 4 --k 4 --steps 10 --resolution 64
    python benchmarks/synthesis.py --arch sd15 --captions 8 --k 10 --steps 50 --resolution 512 --batch 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stablerep.seeding import image_seed
from stablerep.synthesis import GenerationRequest
from stablerep.synthesis.diffusers_backend import DiffusersBackend
from stablerep.synthesis.tiny import tiny_pipeline_path
from stablerep.world import procedural_captions

SD15_UNET_TFLOP_PER_GUIDED_STEP_512 = 1.354
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def build_sd15_random(path: Path) -> Path:
    """The SD v1.5 architecture (UNet, VAE, CLIP ViT-L/14 text model) with random weights."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from stablerep.synthesis.tiny import write_clip_tokenizer_files

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408,
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    vocab, merges = write_clip_tokenizer_files(path / "_tok")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=CLIPTokenizer(str(vocab), str(merges), model_max_length=77),
                                   unet=unet, scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                                                      beta_schedule="scaled_linear", clip_sample=False,
                                                                      set_alpha_to_one=False, steps_offset=1),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(path / "sd15"))
    return path / "sd15"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["tiny", "sd15"], default="tiny")
    p.add_argument("--model", default=None, help="a saved pipeline folder instead of --arch")
    p.add_argument("--captions", type=int, default=4)
    p.add_argument("--k", type=int, default=4, help="images per caption")
    p.add_argument("--batch", type=int, default=16, help="images per call (ours)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile our UNet")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(tiny_pipeline_path() if args.arch == "tiny" else build_sd15_random(Path(tmp)))
        captions = procedural_captions(args.captions, seed=0)
        requests = [GenerationRequest(i, c, k, image_seed(0, i, k)) for i, c in enumerate(captions) for k in range(args.k)]
        ours = DiffusersBackend(model, device=args.device, dtype=args.dtype, steps=args.steps,
                                guidance=args.guidance, resolution=args.resolution, compile_unet=args.compile)
        device, dtype = ours.device, ours.dtype

        def run_ours():
            for s in range(0, len(requests), args.batch):
                ours.generate(requests[s:s + args.batch])

        from diffusers import DDIMScheduler, StableDiffusionPipeline

        base = StableDiffusionPipeline.from_pretrained(model, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False, local_files_only=True)
        base.scheduler = DDIMScheduler.from_config(base.scheduler.config)
        base = base.to(device)
        base.set_progress_bar_config(disable=True)

        def run_baseline():
            for i, caption in enumerate(captions):
                base(caption, num_images_per_prompt=args.k, generator=torch.Generator(device).manual_seed(i),
                     num_inference_steps=args.steps, guidance_scale=args.guidance,
                     height=args.resolution, width=args.resolution)

        results = {"settings": vars(args), "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                   "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        n_images = len(requests)
        for name, fn in (("baseline_diffusers_call", run_baseline), ("stablerep_backend", run_ours)):
            fn()  # warm-up (compile, cudnn autotune)
            _sync(device)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            results[name] = {"images_per_s": n_images / med, "s_per_image": med / n_images, "repeats_s": times}
    results["ratio"] = results["stablerep_backend"]["images_per_s"] / results["baseline_diffusers_call"]["images_per_s"]
    if device.type == "cuda" and args.arch == "sd15":
        peak = next((v for k, v in PEAK_BF16.items() if k in results["device_name"]), None)
        tflop = SD15_UNET_TFLOP_PER_GUIDED_STEP_512 * (args.resolution / 512) ** 2 * args.steps
        if peak:
            results["unet_mfu"] = results["stablerep_backend"]["images_per_s"] * tflop * 1e12 / peak
    print(f"{args.arch if not args.model else args.model} @ {args.resolution}px, {args.steps} steps, guidance "
          f"{args.guidance}, {args.captions} captions x {args.k} images on {results['device_name']} ({results['dtype']})")
    for name in ("baseline_diffusers_call", "stablerep_backend"):
        r = results[name]
        print(f"  {name:24s} {r['images_per_s']:8.2f} images/s  ({r['s_per_image'] * 1e3:.1f} ms/image)")
    print(f"  ratio: {results['ratio']:.2f}x" + (f"   UNet MFU {results['unet_mfu'] * 100:.1f}%" if "unet_mfu" in results else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
