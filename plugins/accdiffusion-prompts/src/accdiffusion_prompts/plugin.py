"""The ``cross_attention`` and ``identical`` prompt decomposers, as one registration list."""

from __future__ import annotations

from accdiffusion.plugins import StageEntry, StagePlugin

from .decomposers import CrossAttentionDecomposer, IdenticalDecomposer

plugin = StagePlugin([
    StageEntry("prompt_decomposer", "cross_attention", CrossAttentionDecomposer,
               "AccDiffusion patch-content-aware prompts from phase-1 cross-attention maps"),
    StageEntry("prompt_decomposer", "identical", IdenticalDecomposer,
               "the whole prompt for every window (MultiDiffusion / DemoFusion)"),
])
