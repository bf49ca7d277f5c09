"""The ``window_interaction`` and ``dilated`` global guidances, as one registration list."""

from __future__ import annotations

from accdiffusion.plugins import StageEntry, StagePlugin

from .guidance import DilatedGuidance, WindowInteractionGuidance

plugin = StagePlugin([
    StageEntry("global_guidance", "window_interaction", WindowInteractionGuidance,
               "AccDiffusion dilated sampling with window interaction"),
    StageEntry("global_guidance", "dilated", DilatedGuidance, "DemoFusion dilated sampling"),
])
