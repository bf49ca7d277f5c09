"""Object-repetition benchmark: count repeated objects per method.

Generates a fixed prompt set x seeds at several scale factors with

* ``direct``: plain sampling at the high size (the diffusers pipeline alone);
* ``multidiffusion``: local windows only, identical prompts (with DemoFusion's
  progressive upscaling and skip residual);
* ``demofusion``: identical prompts, plain dilated sampling;
* ``patch-prompts``: AccDiffusion's patch prompts, plain dilated sampling;
* ``interaction``: identical prompts, dilated sampling with window interaction;
* ``accdiffusion``: patch prompts and window interaction (the full method);

and counts the objects in every image with the procedural detector (see
:func:`count_named` for what counts as a copy). Per method: mean copies of
the named objects per image against the prompt's count, the share of images
with extra copies of a named object, the share with exactly the named
objects and nothing else, mean seconds per image, and two quality measures
of :mod:`accdiffusion_shapes.quality` on the unfiltered image: speckle (the
share of background pixels more than 30 levels from the prompt's background
colour) and grey tiles (native-size cells whose background's mean colour is
more than 30 levels from it). Writes every image under ``images/``, one
``parts/<factor>x-<method>-seeds-<seeds>.json`` per method, factor and
seed list and ``parts/phase1-seeds-<seeds>.json`` (each prompt and seed's
phase-1 image, once per run; ``--jobs`` children leave it to their parent)
(one row per image: a rerun's row replaces the earlier one), and from all parts
present ``repetition.md`` (table), ``repetition.json`` (every image's counts)
and ``repetition-<factor>x.png`` (grids: one row per method). Runs for
different factors, methods or seeds can go in parallel into one folder; the last to
finish (or ``--summarize-only``) writes the merged table.

``--prompt TEXT`` (repeatable) replaces the fixed prompt set; its named
objects are read from the caption grammar (:func:`world.parse_prompt`). A
prompt or negative prompt with a word outside :data:`world.VOCABULARY` is
refused before the model is loaded: the error names the word and the exit
code is 2.

Usage::

    python -m accdiffusion_shapes.repetition --out docs/repetition [--factors 3 4] [--seeds 0 1] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

import accdiffusion
from PIL import Image, ImageFilter

from accdiffusion.loading import load_pipeline
from accdiffusion.viz import grid
from accdiffusion_shapes import default_model_path, quality, world
from accdiffusion_shapes.detector import detect

#: ``(prompt, named objects as (colour, shape) -> count)``.
PROMPTS: tuple[tuple[str, dict[tuple[str, str], int]], ...] = (
    ("a red circle on a white background", {("red", "circle"): 1}),
    ("a blue square on a black background", {("blue", "square"): 1}),
    ("a green triangle on a gray background", {("green", "triangle"): 1}),
    ("a yellow circle on a black background", {("yellow", "circle"): 1}),
    ("a red square and a blue circle on a white background", {("red", "square"): 1, ("blue", "circle"): 1}),
    ("a blue triangle and a yellow square on a gray background", {("blue", "triangle"): 1, ("yellow", "square"): 1}),
    ("a green circle and a red triangle and a blue square on a white background",
     {("green", "circle"): 1, ("red", "triangle"): 1, ("blue", "square"): 1}),
    ("a yellow triangle and a green square and a red circle on a black background",
     {("yellow", "triangle"): 1, ("green", "square"): 1, ("red", "circle"): 1}),
)
"""The benchmark's prompts: the first five are the first edition's set (``--prompts 5``
reproduces its table); three more bring two- and three-object prompts on every background."""

#: Method name -> stage choices for :func:`accdiffusion.generate` (``None``: direct sampling).
METHODS: dict[str, Optional[dict[str, str]]] = {
    "direct": None,
    "multidiffusion": {"prompt_decomposer": "identical", "global_guidance": "none"},
    "demofusion": {"prompt_decomposer": "identical", "global_guidance": "dilated"},
    "patch-prompts": {"prompt_decomposer": "cross_attention", "global_guidance": "dilated"},
    "interaction": {"prompt_decomposer": "identical", "global_guidance": "window_interaction"},
    "accdiffusion": {"prompt_decomposer": "cross_attention", "global_guidance": "window_interaction"},
    # the full method on the fast schedule, at its default start and at other starts (how the default was chosen)
    "accdiffusion-fast": {"prompt_decomposer": "cross_attention", "global_guidance": "window_interaction",
                          "schedule": "fast"},
    "fast-start-0.6": {"prompt_decomposer": "cross_attention", "global_guidance": "window_interaction",
                       "schedule": "fast", "plugin_options": {"fast.start_fraction": "0.6"}},
    # the full method with structure guidance (AccDiffusion v2's ControlNet on the previous phase's edges)
    "accdiffusion-controlnet": {"prompt_decomposer": "cross_attention", "global_guidance": "window_interaction",
                                "structure_guidance": "controlnet"},
    "fast-start-0.8": {"prompt_decomposer": "cross_attention", "global_guidance": "window_interaction",
                       "schedule": "fast", "plugin_options": {"fast.start_fraction": "0.8"}},
    # the full method with the instance decomposer (accdiffusion-instance): an object's words only for the
    # window(s) holding most of the object
    "accdiffusion-instance": {"prompt_decomposer": "instance", "global_guidance": "window_interaction"},
}

#: Methods run unless ``--methods`` says otherwise (the start sweep is asked for by name).
DEFAULT_METHODS = ("direct", "multidiffusion", "demofusion", "patch-prompts", "interaction", "accdiffusion",
                   "accdiffusion-fast")


#: Name of the rows holding each prompt x seed's phase-1 image (native size), which every method built on
#: the sampler shares: the benchmark makes it once per prompt and seed, and the table's column "exact when
#: phase 1 is exact" measures each method only on the images whose phase 1 was already as prompted.
PHASE1 = "phase-1"


def _order(method: str) -> int:
    return -1 if method == PHASE1 else list(METHODS).index(method)


#: The ControlNet of the ``accdiffusion-controlnet`` method (``--controlnet``; default: the shipped one).
CONTROLNET: Optional[str] = None

#: A copy is a connected component of at least this share of the *native* image
#: area (about half a small object at native size): smaller specks do not count.
MIN_COPY_AREA = 0.025


def count_named(image: Any, named: dict[tuple[str, str], int], native: int) -> dict[str, Any]:
    """Copies of the prompt's named objects found in ``image``.

    The image is median-filtered (3x3) so that isolated noisy pixels do not
    join objects, then every connected component of an object colour with at
    least :data:`MIN_COPY_AREA` of ``native**2`` pixels is a copy. Copies are
    counted by colour (each prompt names distinct colours), since shapes
    distorted by upscaling are not reliably classified; ``shape_matched``
    counts those whose shape is also the named one.
    """
    filtered = image.convert("RGB").filter(ImageFilter.MedianFilter(3))
    found = detect(filtered, reference_size=native, min_area_fraction=MIN_COPY_AREA)
    by_color = Counter(o.color for o in found)
    by_object = Counter((o.color, o.shape) for o in found)
    colors: Counter = Counter()
    for (c, _), n in named.items():
        colors[c] += n
    return {
        "named": sum(by_color.get(c, 0) for c in colors),
        "shape_matched": sum(by_object.get(k, 0) for k in named),
        "expected": sum(named.values()),
        "total": sum(by_color.values()),
        "extra": any(by_color.get(c, 0) > n for c, n in colors.items()),
        "exact": by_color == Counter(colors),
        "per_object": {f"{c} {s}": by_color.get(c, 0) for (c, s) in named},
    }


def run_one(method: str, pipe: Any, prompt: str, factor: int, seed: int, steps: int,
            guidance: float, negative_prompt: str = "") -> tuple[Any, float, int]:
    """One image of ``method``, the seconds it took and its UNet evaluations (CFG
    halves counted separately; same scheduler, steps, guidance and negative
    prompt for every method)."""
    start = time.perf_counter()
    if method == PHASE1:
        # the native-size image every sampler method starts from (scale 1: phase 1 alone)
        method, factor = "multidiffusion", 1
    if METHODS[method] is None:
        evaluations = steps * (2 if guidance > 1 else 1)
        native = pipe.unet.config.sample_size * pipe.vae_scale_factor
        image = pipe(prompt, negative_prompt=negative_prompt, height=native * factor, width=native * factor,
                     num_inference_steps=steps, guidance_scale=guidance,
                     generator=torch.Generator().manual_seed(seed)).images[0]
    else:
        options = dict(METHODS[method])
        if options.get("structure_guidance") == "controlnet":
            from accdiffusion_shapes import default_controlnet_path

            options["controlnet"] = str(CONTROLNET or default_controlnet_path())
        result = accdiffusion.generate(prompt, pipeline=pipe, scale=factor, steps=steps, seed=seed,
                                       guidance_scale=guidance, multi_guidance_scale=guidance,
                                       negative_prompt=negative_prompt, **options)
        image, evaluations = result.image, result.unet_evaluations
    return image, time.perf_counter() - start, evaluations


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (factor, method): means and shares over all images."""
    out = []
    keys = sorted({(r["factor"], r["method"]) for r in rows}, key=lambda k: (k[0], _order(k[1])))
    phase1 = {(r["prompt"], r["seed"]): r["exact"] for r in rows if r["method"] == PHASE1}
    for factor, method in keys:
        sel = [r for r in rows if r["factor"] == factor and r["method"] == method]
        n = len(sel)
        # only methods that start from the shared phase-1 image (not direct sampling, not phase 1 itself)
        given = [r for r in sel if phase1.get((r["prompt"], r["seed"]))] \
            if phase1 and method != PHASE1 and METHODS.get(method) is not None else []
        out.append({
            "factor": factor, "method": method, "images": n,
            "named_per_image": sum(r["named"] for r in sel) / n,
            "shape_matched_per_image": sum(r["shape_matched"] for r in sel) / n,
            "expected_per_image": sum(r["expected"] for r in sel) / n,
            "total_per_image": sum(r["total"] for r in sel) / n,
            "extra_share": sum(r["extra"] for r in sel) / n,
            "exact_share": sum(r["exact"] for r in sel) / n,
            "phase1_exact_images": len(given) if given else None,
            "exact_given_phase1": (sum(r["exact"] for r in given) / len(given)) if given else None,
            "seconds_per_image": sum(r["seconds"] for r in sel) / n,
            "unet_evaluations_per_image": sum(r.get("unet_evaluations", 0) for r in sel) / n,
            # None for images measured before the quality columns existed
            "speckle": (sum(r["speckle"] for r in sel) / n) if all("speckle" in r for r in sel) else None,
            "grey_tiles_per_image": (sum(r["grey_tiles"] for r in sel) / n)
            if all("grey_tiles" in r for r in sel) else None,
        })
    return out


def markdown(summary: list[dict[str, Any]], command: str) -> str:
    """The summary as a markdown table, with the command that produced it."""
    lines = [
        "| factor | method | images | copies of named objects / image (prompt's count) | of those with the named "
        "shape | all objects / image | images with extra copies | images exactly as prompted | exactly as "
        "prompted when phase 1 is (images) | s / image | UNet evaluations / image | speckle | grey tiles / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        speckle = "-" if s.get("speckle") is None else f"{100 * s['speckle']:.2f}%"
        tiles = "-" if s.get("grey_tiles_per_image") is None else f"{s['grey_tiles_per_image']:.2f}"
        given = "-" if s.get("exact_given_phase1") is None else \
            f"{100 * s['exact_given_phase1']:.0f}% ({s['phase1_exact_images']})"
        lines.append(
            f"| {s['factor']}x | {s['method']} | {s['images']} | {s['named_per_image']:.2f} "
            f"({s['expected_per_image']:.2f}) | {s['shape_matched_per_image']:.2f} | {s['total_per_image']:.2f} "
            f"| {100 * s['extra_share']:.0f}% "
            f"| {100 * s['exact_share']:.0f}% | {given} | {s['seconds_per_image']:.1f} "
            f"| {s['unet_evaluations_per_image']:.0f} | {speckle} | {tiles} |"
        )
    return f"Command: `{command}`\n\n" + "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m accdiffusion_shapes.repetition", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(default_model_path()), help="diffusers folder of a shapes-world model")
    p.add_argument("--out", required=True, help="output folder for the table, JSON and grids")
    p.add_argument("--factors", type=int, nargs="+", default=[3, 4], help="scale factors")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds per prompt")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per phase")
    p.add_argument("--guidance", type=float, default=4.0, help="CFG scale of every path (the model card's)")
    p.add_argument("--negative-prompt", default="", help="negative prompt of every method (the model was trained "
                   "with empty captions for guidance; words outside its vocabulary mean nothing to it)")
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts of the set")
    p.add_argument("--prompt", action="append", default=[], help="a prompt of your own in place of the set "
                   "(repeatable; words of the shapes world's vocabulary in the caption grammar)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS),
                   help="methods to run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--controlnet", default=None,
                   help="ControlNet folder of the accdiffusion-controlnet method (default: the shipped one)")
    p.add_argument("--summarize-only", action="store_true",
                   help="only rebuild the table and grids from the parts already in OUT (after parallel runs)")
    p.add_argument("--jobs", type=int, default=1,
                   help="run every factor x method x seed as its own process, this many at a time (one torch "
                   "thread each unless --threads says otherwise), then merge the table")
    # a job of --jobs: neither the phase-1 part (its parent makes it) nor the merged table
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    return args


#: Relative cost of one image per method (UNet evaluations at 4x, direct sampling the cheapest),
#: used only to start the longest parallel jobs first.
_COST = {"direct": 0.05, "multidiffusion": 0.5, "accdiffusion-fast": 0.3, "fast-start-0.6": 0.45,
         "fast-start-0.8": 0.2}


def run_jobs(args: argparse.Namespace) -> None:
    """Run each factor x method x seed of ``args`` as a child process (``args.jobs`` at once), each writing
    its own part; the caller makes the phase-1 part and merges them."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    base = ["--model", args.model, "--out", args.out, "--steps", str(args.steps), "--guidance", str(args.guidance),
            "--negative-prompt", args.negative_prompt, "--threads", str(args.threads or 1), "--child"]
    base += [arg for prompt in args.prompt for arg in ("--prompt", prompt)] or ["--prompts", str(args.prompts)]
    if args.controlnet:
        base += ["--controlnet", args.controlnet]
    tasks = [(factor, method, seed) for factor in args.factors for method in args.methods for seed in args.seeds]
    tasks.sort(key=lambda t: -(t[0] ** 2) * _COST.get(t[1], 1.0))

    def child(task: tuple[int, str, int]) -> int:
        factor, method, seed = task
        command = [sys.executable, "-m", "accdiffusion_shapes.repetition", *base,
                   "--factors", str(factor), "--methods", method, "--seeds", str(seed)]
        return subprocess.run(command).returncode

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        codes = list(pool.map(child, tasks))
    failed = [task for task, code in zip(tasks, codes) if code != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(tasks)} jobs failed: {failed}")


def measure(method: str, factor: int, args: argparse.Namespace, pipe: Any,
            prompts: Sequence[tuple[str, dict[tuple[str, str], int]]]) -> list[dict[str, Any]]:
    """Every prompt x seed of ``args`` with ``method`` at ``factor``: images saved under ``args.out``, one row
    of counts and quality measures each."""
    out = Path(args.out)
    folder = out / "images" / f"{factor}x" / method
    folder.mkdir(parents=True, exist_ok=True)
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows: list[dict[str, Any]] = []
    for k, (prompt, named) in enumerate(prompts):
        for seed in args.seeds:
            image, seconds, evaluations = run_one(method, pipe, prompt, factor, seed, args.steps, args.guidance,
                                                  args.negative_prompt)
            counts = count_named(image, named, native)
            measures = quality.measure(image, native, world.parse_prompt(prompt)[0])
            name = folder / f"{k}-{seed}.png"
            image.save(name)
            rows.append({"factor": factor, "method": method, "prompt": prompt, "prompt_index": k,
                         "seed": seed, "seconds": round(seconds, 3), "unet_evaluations": evaluations,
                         "image": str(name.relative_to(out)), **counts,
                         "speckle": measures["speckle"], "grey_tiles": measures["grey_tiles"],
                         "tile_cells": measures["tile_cells"]})
            print(f"{factor}x {method:<15} seed {seed} {prompt!r}: {counts['per_object']} "
                  f"speckle {100 * measures['speckle']:.2f}% grey tiles {measures['grey_tiles']} "
                  f"({seconds:.1f} s)", flush=True)
    return rows


def write_part(out: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """``rows`` as ``out/parts/name``, written aside and then put in place in one step."""
    path = out / "parts" / name
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(rows, indent=2))
    os.replace(temporary, path)


def prompt_set(args: argparse.Namespace) -> tuple[tuple[str, dict[tuple[str, str], int]], ...]:
    """The run's prompts with their named objects, after checking every prompt's words.

    Raises:
        world.PromptError: A prompt or the negative prompt has a word outside
            the vocabulary, or a ``--prompt`` is outside the caption grammar.
    """
    if args.negative_prompt:
        world.check_vocabulary(args.negative_prompt, "negative prompt")
    if not args.prompt:
        for prompt, _ in PROMPTS[: args.prompts]:
            world.check_vocabulary(prompt)
        return PROMPTS[: args.prompts]
    prompts = []
    for prompt in args.prompt:
        named: Counter = Counter()
        for obj in world.parse_prompt(prompt)[1]:
            named[(obj.color, obj.shape)] += 1
        prompts.append((prompt, dict(named)))
    return tuple(prompts)


def summarize_folder(out: Path, command: str) -> str:
    """Merge every ``parts/*.json`` of ``out`` into the table, JSON and grids."""
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for part in sorted((out / "parts").glob("*.json"), key=lambda path: path.stat().st_mtime):
        for row in json.loads(part.read_text()):
            # one row per image: a later part (a rerun) replaces an earlier one's row
            found[(row["factor"], row["method"], row["prompt"], row["seed"])] = row
    rows = list(found.values())
    if not rows:
        raise SystemExit(f"no results in {out / 'parts'}")
    rows.sort(key=lambda r: (r["factor"], _order(r["method"]), r["prompt_index"], r["seed"]))
    for factor in sorted({r["factor"] for r in rows}):
        sel = [r for r in rows if r["factor"] == factor]
        columns = len({(r["prompt_index"], r["seed"]) for r in sel})
        images = [Image.open(out / r["image"]) for r in sel]
        labels = [f"{r['method']} {r['named']}/{r['expected']}" for r in sel]
        # a 256-colour palette keeps flat-coloured grids of many images small (a third of the RGB file)
        grid(images, labels, columns=columns, tile=160).convert("RGB").quantize(256).save(
            out / f"repetition-{factor}x.png", optimize=True)
    summary = summarize(rows)
    table = markdown(summary, command)
    (out / "repetition.md").write_text(table)
    (out / "repetition.json").write_text(json.dumps({"summary": summary, "images": rows}, indent=2))
    return table


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        prompts = prompt_set(args)
    except world.PromptError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    global CONTROLNET
    CONTROLNET = args.controlnet
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    command = "python -m accdiffusion_shapes.repetition " + " ".join(
        [f"--out {args.out}", "--factors", *map(str, args.factors), "--seeds", *map(str, args.seeds),
         f"--steps {args.steps}", f"--guidance {args.guidance}"]
        + ([f"--prompt {p!r}" for p in args.prompt] or [f"--prompts {args.prompts}"])
        + (["--methods", *args.methods] if list(args.methods) != list(DEFAULT_METHODS) else [])
        + ([f"--negative-prompt {args.negative_prompt!r}"] if args.negative_prompt else [])
        + ([f"--model {args.model}"] if args.model != str(default_model_path()) else []))
    if not args.summarize_only:
        (out / "parts").mkdir(parents=True, exist_ok=True)
        seeds = "-".join(map(str, args.seeds))
        pipe = load_pipeline(args.model)
        if not args.child:
            # phase 1 (native size, shared by every method built on the sampler), once per prompt and seed
            write_part(out, f"phase1-seeds-{seeds}.json", measure(PHASE1, 1, args, pipe, prompts))
        if args.jobs > 1:
            run_jobs(args)
        else:
            for factor in args.factors:
                for method in args.methods:
                    write_part(out, f"{factor}x-{method}-seeds-{seeds}.json",
                               measure(method, factor, args, pipe, prompts))
    if not args.child:
        print(summarize_folder(out, command))


if __name__ == "__main__":
    main()
