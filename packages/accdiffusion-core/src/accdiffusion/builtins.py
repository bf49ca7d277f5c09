"""The core's own stages and model families, registered from one list like any plugin's.

* model families: ``sdxl`` and ``sd`` (:mod:`accdiffusion.models.unet`), ``flux``
  (:mod:`accdiffusion.models.flux`), ``sd3`` (:mod:`accdiffusion.models.sd3`);
* schedules: ``paper`` (default) and ``fast`` (:mod:`accdiffusion.schedules`);
* structure guidances: ``none`` (default) and ``controlnet``
  (:mod:`accdiffusion.structure`).
"""

from __future__ import annotations

from .models.flux import FLUX_FAMILY
from .models.sd3 import SD3_FAMILY
from .models.unet import SD_FAMILY, SDXL_FAMILY
from .registration import StageEntry, StagePlugin
from .schedules import FastSchedule, PaperSchedule
from .structure import ControlNetGuidance, NoStructureGuidance

BUILTINS = StagePlugin([
    # families are asked latest registered first: SDXL before SD (single-file checkpoints too)
    StageEntry("model_family", "sd3", SD3_FAMILY, SD3_FAMILY.description),
    StageEntry("model_family", "flux", FLUX_FAMILY, FLUX_FAMILY.description),
    StageEntry("model_family", "sd", SD_FAMILY, SD_FAMILY.description),
    StageEntry("model_family", "sdxl", SDXL_FAMILY, SDXL_FAMILY.description),
    StageEntry("schedule", "paper", PaperSchedule,
               "DemoFusion/AccDiffusion as published: every phase from pure noise, all steps"),
    StageEntry("schedule", "fast", FastSchedule,
               "each upscaling phase starts 70% of the way down its schedule: at most 30% of its steps"),
    StageEntry("structure_guidance", "none", NoStructureGuidance,
               "no extra conditioning of the local windows (AccDiffusion v1)"),
    StageEntry("structure_guidance", "controlnet", ControlNetGuidance,
               "AccDiffusion v2: a ControlNet on the previous phase's canny edges, per local window (--controlnet)"),
])
