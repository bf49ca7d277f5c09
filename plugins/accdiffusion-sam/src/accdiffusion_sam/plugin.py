"""The ``sam`` prompt decomposer, as a registration list."""

from __future__ import annotations

from accdiffusion.plugins import StageEntry, StagePlugin

from .decomposer import SamDecomposer, SamOptions

plugin = StagePlugin([
    StageEntry("prompt_decomposer", "sam", SamDecomposer.for_run,
               "patch prompts from Segment Anything masks at the cross-attention peaks", options=SamOptions),
])
