"""Train a canny ControlNet for the shapes-world model (structure guidance).

Usage::

    python -m accdiffusion_shapes.train_controlnet --out runs/controlnet --minutes 20 --threads 1

The ControlNet starts as a copy of the shapes model's UNet encoder
(``ControlNetModel.from_unet``, zero-initialised output convolutions) with a
one-level control-image embedding (no downsampling: the model works in pixel
space). The UNet and the text encoder stay frozen. Each training pair is a
random native-size scene and the canny edges
(:func:`accdiffusion.structure.auto_canny`) of that scene after a 2x
down-and-up resize, which is what structure guidance sees at inference: the
edges of the previous, smaller phase's image upsampled to the window's size.
The objective is the model's own (epsilon, offset noise), with captions
dropped with probability ``--drop-prob``. Training stops after ``--steps``
steps or ``--minutes`` of compute, whichever comes first, and exports the
ControlNet folder ``OUT/controlnet`` (safetensors) with ``loss.csv``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from diffusers import ControlNetModel, DiffusionPipeline
from PIL import Image

from accdiffusion.structure import auto_canny, image_tensor
from accdiffusion_shapes import default_model_path, world
from accdiffusion_shapes.train import CaptionEncoder, build_scheduler


def control_for(image: Image.Image) -> torch.Tensor:
    """Canny edges of ``image`` after a 2x down-and-up bicubic resize, ``(3, H, W)`` in ``[0, 1]``."""
    w, h = image.size
    blurred = image.resize((w // 2, h // 2), Image.BICUBIC).resize((w, h), Image.BICUBIC)
    return image_tensor(auto_canny(blurred))


def make_batch(rng: np.random.Generator, n: int, drop_prob: float) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images, controls, captions = [], [], []
    for _ in range(n):
        image, text, _ = world.sample(rng, supersample=2)
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0)
        controls.append(control_for(image))
        captions.append("" if rng.random() < drop_prob else text)
    return torch.stack(images), torch.stack(controls), captions


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m accdiffusion_shapes.train_controlnet", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(default_model_path()), help="the shapes pipeline folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--minutes", type=float, default=20.0, help="stop after this much compute")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--drop-prob", type=float, default=0.1)
    p.add_argument("--offset-noise", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    pipe = DiffusionPipeline.from_pretrained(args.model)
    unet, text_encoder = pipe.unet.requires_grad_(False), pipe.text_encoder.requires_grad_(False)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,))
    controlnet.train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=args.lr, weight_decay=0.0)
    alphas = build_scheduler().alphas_cumprod.float()
    encode = CaptionEncoder(pipe.tokenizer)
    args.out.mkdir(parents=True, exist_ok=True)
    elapsed, step = 0.0, 0
    with (args.out / "loss.csv").open("w", newline="") as fh:
        log = csv.writer(fh)
        log.writerow(["step", "loss", "elapsed_s"])
        while step < args.steps and elapsed < args.minutes * 60:
            start = time.perf_counter()
            pixels, control, captions = make_batch(rng, args.batch_size, args.drop_prob)
            noise = torch.randn_like(pixels) + args.offset_noise * torch.randn(len(pixels), 3, 1, 1)
            t = torch.randint(0, len(alphas), (len(pixels),))
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * pixels + (1 - a).sqrt() * noise
            with torch.no_grad():
                context = text_encoder(encode(captions))[0]
            down, mid = controlnet(noisy, t, context, controlnet_cond=control, return_dict=False)
            pred = unet(noisy, t, context, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
            optimizer.step()
            step += 1
            elapsed += time.perf_counter() - start
            log.writerow([step, f"{loss.item():.5f}", f"{elapsed:.1f}"])
            if step % 50 == 0:
                fh.flush()
                print(f"step {step} loss {loss.item():.4f} ({elapsed:.0f} s)", flush=True)
    folder = args.out / "controlnet"
    controlnet.save_pretrained(folder, safe_serialization=True)
    print(f"{step} steps in {elapsed:.0f} s; wrote {folder}")
    return folder


def main(argv: Optional[Sequence[str]] = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
