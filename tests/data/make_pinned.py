"""Writes ``pinned_outputs.pt`` for ``tests/test_pinned_output.py``.

Run from the repository root: ``python tests/data/make_pinned.py``. Each case
is a run on the tiny models of ``accdiffusion_testing`` with a fixed seed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

PROMPT = "a red circle and a blue square on a white background"

#: name -> (family, options); every other setting is the default.
CASES = {
    "sdxl-default-3x": ("sdxl", dict(scale=3, steps=4, seed=11)),
    "sd15-default-3x": ("sd15", dict(scale=3, steps=4, seed=12)),
    "sdxl-default-batch5": ("sdxl", dict(scale=3, steps=3, seed=13, view_batch_size=5)),
    "sdxl-demofusion": ("sdxl", dict(scale=3, steps=3, seed=14, prompt_decomposer="identical",
                                     global_guidance="dilated")),
    "sd15-multidiffusion-dpmpp": ("sd15", dict(scale=2, steps=4, seed=15, global_guidance="none",
                                              scheduler="dpmpp")),
    "sdxl-nonsquare-unipc": ("sdxl", dict(height=64, width=96, steps=4, seed=16, scheduler="unipc")),
    "sdxl-cfg-split": ("sdxl", dict(scale=2, steps=3, seed=17, guidance_scale=1.0, multi_guidance_scale=5.0)),
    "sd15-image": ("sd15", dict(scale=2, steps=4, seed=18, image=True)),
}


def input_image() -> Image.Image:
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(24, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def run_case(pipes, case):
    """Final latents and the result of the run named ``case``."""
    from accdiffusion import generate

    family, options = CASES[case]
    options = dict(options)
    if options.pop("image", False):
        options["image"] = input_image()
    result = generate(PROMPT, pipeline=pipes[family], **options)
    return result.latents, result


def main() -> None:
    from accdiffusion.loading import load_pipeline
    from accdiffusion_testing.models import make_tiny_sd15, make_tiny_sdxl

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        pipes = {
            "sdxl": load_pipeline(str(make_tiny_sdxl(Path(tmp) / "sdxl"))),
            "sd15": load_pipeline(str(make_tiny_sd15(Path(tmp) / "sd15"))),
        }
        out = {case: run_case(pipes, case)[0] for case in CASES}
    target = Path(__file__).parent / "pinned_outputs.pt"
    torch.save(out, target)
    print(f"wrote {target}: {', '.join(out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
