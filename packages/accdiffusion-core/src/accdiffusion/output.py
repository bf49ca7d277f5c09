"""The run record and writing a run's files atomically.

A run folder is assembled under a hidden temporary name inside the output
folder and renamed into place only when every file is written, so a failed
run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import attrs

from .sampler import Result, Sampler
from .schedulers import make_scheduler
from .settings import Settings


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("accdiffusion-core", "torch", "diffusers", "transformers"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def build_record(result: Result, settings: Settings, sampler: Sampler, *, model: Optional[str] = None,
                 seconds: Optional[float] = None) -> dict[str, Any]:
    """Everything needed to reproduce and understand a run, as plain JSON."""
    a = sampler.adapter
    sched = a.pipeline.scheduler
    plan = result.plan
    phases = []
    for ph in result.phases:
        entry: dict[str, Any] = {"scale": ph.scale, "latent_size": list(ph.latent_size), "seconds": round(ph.seconds, 3)}
        if ph.layout is not None:
            entry["pad"] = ph.layout.pad
            entry["windows"] = [[w.top, w.left, w.height, w.width] for w in ph.layout.windows]
        if ph.patch_prompts is not None:
            entry["patch_prompts"] = list(ph.patch_prompts.prompts)
            entry["distinct_patch_prompts"] = len(ph.patch_prompts.unique()[0])
        phases.append(entry)
    resolved = attrs.evolve(settings, seed=result.seed, height=plan.height, width=plan.width)
    return {
        "versions": _versions(),
        "model": {
            "location": model,
            "pipeline": type(a.pipeline).__name__,
            "family": a.family,
            "native_size": a.native_size,
            "vae_scale_factor": a.vae_scale_factor,
        },
        "settings": resolved.to_dict(),
        "seed": result.seed,
        "plugins": dict(sampler.stage_names),
        "scheduler": {"name": settings.scheduler, "class": type(make_scheduler(settings.scheduler, sched)).__name__,
                      "model_default": type(sched).__name__},
        "plan": {
            "height": plan.height, "width": plan.width, "factor": plan.factor, "scales": list(plan.scales),
            "latent_sizes": [list(s) for s in plan.latent_sizes], "window": plan.window, "stride": plan.stride,
        },
        "attention_words": None if result.attention is None else list(result.attention.words),
        "phases": phases,
        "warnings": list(result.warnings),
        "seconds": None if seconds is None else round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_run(result: Result, out_dir: str | os.PathLike, name: str, *, attention_pictures: bool = True) -> Path:
    """Write ``image.png``, ``record.json``, stage images and pictures of the
    attention maps and patch prompts to ``out_dir/name``; returns that folder.

    Files appear all at once: they are written to a temporary folder that is
    renamed into place, and removed if anything fails.
    """
    from .viz import attention_sheet, patch_prompt_sheet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / name
    k = 1
    while final.exists():
        final = out / f"{name}-{k}"
        k += 1
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out))
    try:
        files = {"image": "image.png", "record": "record.json"}
        result.image.save(tmp / "image.png")
        if result.stage_images:
            (tmp / "stages").mkdir()
            for scale, img in result.stage_images:
                img.save(tmp / "stages" / f"scale-{scale}.png")
            files["stages"] = "stages/"
        if attention_pictures:
            pics = tmp / "attention"
            pics.mkdir()
            if result.attention is not None and len(result.attention.words):
                masks = None
                fn = getattr(result.prompt_decomposer, "word_masks", None)
                if fn is not None:
                    masks = fn(result.attention)
                attention_sheet(result.attention, masks).save(pics / "attention-maps.png")
            vsf = result.plan.vae_scale_factor
            for ph in result.phases:
                if ph.layout is not None and ph.patch_prompts is not None:
                    patch_prompt_sheet(result.image, ph.layout, ph.patch_prompts,
                                       vsf * result.plan.latent_sizes[-1][0] / ph.latent_size[0]
                                       ).save(pics / f"patch-prompts-scale-{ph.scale}.png")
            if not any(pics.iterdir()):
                pics.rmdir()
            else:
                files["pictures"] = "attention/"
        record = dict(result.record)
        record["files"] = files
        (tmp / "record.json").write_text(json.dumps(record, indent=2, default=str))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
