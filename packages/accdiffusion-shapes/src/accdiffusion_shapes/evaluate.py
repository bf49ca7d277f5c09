"""Evaluate a shapes-world pipeline with the procedural detector.

Usage::

    python -m accdiffusion_shapes.evaluate --model DIR [--samples 4] [--json out.json]

At native size the model is prompted with

* every single-object prompt ``"a <colour> <shape> on a <background> background"``
  (4 colours x 3 shapes x 3 backgrounds); a sample counts as correct when the
  detector finds exactly one object and it has the named shape and colour;
* every background-only prompt ``"a <background> background"`` and
  ``"an empty <background> background"``; a sample counts as correct when the
  detector finds no object.

The detector itself is scored on clean renders of random scenes at several
sizes (exact multiset of shape, colour and size).

``--prompt TEXT`` (repeatable) scores more prompts written in the caption
grammar (:func:`world.parse_prompt`): a sample is exact when the detector
finds the named objects (colour and shape, and the size where named) and
nothing else.  A prompt with a word outside :data:`world.VOCABULARY` (or
outside the grammar) is refused before the model is loaded: the error names
the word and the exit code is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline

import accdiffusion_shapes
from accdiffusion_shapes import world
from accdiffusion_shapes.detector import detect, estimate_background


def object_prompts() -> list[tuple[str, str, str]]:
    """All single-object prompts as ``(prompt, shape, colour)``."""
    return [
        (f"a {color} {shape} on {'an' if bg[0] in 'aeiou' else 'a'} {bg} background", shape, color)
        for bg in world.BACKGROUND_COLORS
        for color in world.OBJECT_COLORS
        for shape in world.SHAPES
    ]


def background_prompts() -> list[str]:
    """All background-only prompts."""
    return [f"a {bg} background" for bg in world.BACKGROUND_COLORS] + [
        f"an empty {bg} background" for bg in world.BACKGROUND_COLORS
    ]


def generate(
    pipe: DiffusionPipeline,
    prompts: list[str],
    samples: int,
    steps: int,
    guidance: float,
    seed: int,
    batch_size: int,
) -> list[np.ndarray]:
    """Generate ``samples`` native-size images per prompt, as ``uint8`` arrays in prompt-major order."""
    requests = [prompt for prompt in prompts for _ in range(samples)]
    generator = torch.Generator().manual_seed(seed)
    images: list[np.ndarray] = []
    for start in range(0, len(requests), batch_size):
        batch = pipe(
            requests[start : start + batch_size],
            height=world.NATIVE_SIZE,
            width=world.NATIVE_SIZE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type="np",
        ).images
        images.extend((np.clip(batch, 0.0, 1.0) * 255.0).round().astype(np.uint8))
    return images


def matches_prompt(image: np.ndarray, background: str | None, objects: tuple[world.PromptObject, ...]) -> dict:
    """Score one image against a parsed prompt.

    Returns:
        ``exact``: the detected objects are the named ones (colour and shape,
        and size where the prompt names one) and nothing else;
        ``background``: the border's median is nearest to the named
        background colour (true when the prompt names none); ``objects``:
        how many objects were detected.
    """
    found = detect(image)
    exact = Counter((d.color, d.shape) for d in found) == Counter((o.color, o.shape) for o in objects)
    sized = Counter((o.color, o.shape, o.size) for o in objects if o.size)
    detected = Counter((d.color, d.shape, d.size) for d in found)
    exact = exact and all(detected[key] >= count for key, count in sized.items())
    median = estimate_background(np.asarray(image, dtype=np.float64))
    nearest = min(world.BACKGROUND_COLORS, key=lambda name: np.abs(median - world.BACKGROUND_COLORS[name]).max())
    return {"exact": exact, "background": background is None or nearest == background, "objects": len(found)}


def detector_accuracy(scenes: int, sizes: tuple[int, ...], seed: int) -> dict[str, float]:
    """Share of clean renders (anti-aliased, supersample 2) on which :func:`detect` is exact, per size."""
    rng = np.random.default_rng(seed)
    drawn = [world.random_scene(rng) for _ in range(scenes)]
    result = {}
    for size in sizes:
        exact = sum(
            sorted((d.shape, d.color, d.size) for d in detect(world.render(scene, size=size, supersample=2)))
            == sorted((o.shape, o.color, o.size) for o in scene.objects)
            for scene in drawn
        )
        result[str(size)] = exact / scenes
    return result


def evaluate(
    model: str | Path,
    samples: int = 4,
    steps: int = 30,
    guidance: float = 4.0,
    seed: int = 0,
    batch_size: int = 48,
    detector_scenes: int = 500,
    prompts: tuple[str, ...] = (),
) -> dict[str, object]:
    """Score ``model`` (a pipeline folder) and the detector; see the module docstring.

    Raises:
        world.PromptError: One of ``prompts`` has a word outside the vocabulary
            or the grammar (checked before the model is loaded).
    """
    started = time.perf_counter()
    parsed = [world.parse_prompt(prompt) for prompt in prompts]
    pipe = DiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)

    single = object_prompts()
    images = generate(pipe, [p for p, _, _ in single], samples, steps, guidance, seed, batch_size)
    exact = count_ok = shape_ok = color_ok = 0
    for index, image in enumerate(images):
        _, shape, color = single[index // samples]
        found = detect(image)
        count_ok += len(found) == 1
        shape_ok += any(d.shape == shape for d in found)
        color_ok += any(d.color == color for d in found)
        exact += len(found) == 1 and found[0].shape == shape and found[0].color == color

    empty_prompts = background_prompts()
    empty_images = generate(pipe, empty_prompts, samples * 4, steps, guidance, seed + 1, batch_size)
    empty_ok = sum(not detect(image) for image in empty_images)

    custom = []
    if prompts:
        custom_images = generate(pipe, list(prompts), samples, steps, guidance, seed + 2, batch_size)
        for index, (prompt, (background, objects)) in enumerate(zip(prompts, parsed)):
            scores = [matches_prompt(image, background, objects)
                      for image in custom_images[index * samples : (index + 1) * samples]]
            custom.append({
                "prompt": prompt,
                "images": samples,
                "exact": sum(s["exact"] for s in scores) / samples,
                "background": sum(s["background"] for s in scores) / samples,
                "objects_per_image": sum(s["objects"] for s in scores) / samples,
            })

    total = len(images)
    return {
        "model": str(model),
        "samples_per_prompt": samples,
        "steps": steps,
        "guidance_scale": guidance,
        "seed": seed,
        "object_prompts": {
            "images": total,
            "exact": exact / total,
            "one_object": count_ok / total,
            "shape_found": shape_ok / total,
            "color_found": color_ok / total,
        },
        "background_prompts": {"images": len(empty_images), "no_object": empty_ok / len(empty_images)},
        **({"prompts": custom} if prompts else {}),
        "detector_on_clean_renders": detector_accuracy(detector_scenes, (32, 64, 128), seed),
        "seconds": round(time.perf_counter() - started, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=accdiffusion_shapes.default_model_path())
    parser.add_argument("--samples", type=int, default=4, help="images per single-object prompt")
    parser.add_argument("--steps", type=int, default=30, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--detector-scenes", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="also score this prompt (repeatable; words of world.VOCABULARY in the caption grammar)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print the results as JSON; a prompt outside the vocabulary exits with 2."""
    args = parse_args(argv)
    for prompt in args.prompt:
        try:
            world.parse_prompt(prompt)
        except world.PromptError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
    torch.set_num_threads(args.threads)
    result = evaluate(
        args.model,
        samples=args.samples,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        batch_size=args.batch_size,
        detector_scenes=args.detector_scenes,
        prompts=tuple(args.prompt),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
