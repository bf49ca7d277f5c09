"""Registers the shipped shapes-world model with accdiffusion as ``shapes``."""

from __future__ import annotations

from accdiffusion.plugins import StageEntry, StagePlugin

from accdiffusion_shapes import default_model_path

#: Settings this model is meant to run with: 4x its 32 px native size, the
#: guidance scale it was evaluated with, and an empty negative prompt (it was
#: trained with empty captions for guidance and knows only its 18 caption
#: words, so the default negative prompt would mean nothing to it).
RECOMMENDED = {"scale": 4, "steps": 20, "guidance_scale": 4.0, "multi_guidance_scale": 4.0, "negative_prompt": ""}

plugin = StagePlugin([
    StageEntry("model", "shapes", str(default_model_path()),
               "shapes-world text-to-image model, 32x32 px native, pixel space", defaults=RECOMMENDED),
])
