"""Prompt decomposers for accdiffusion: AccDiffusion patch-content-aware prompts (sec. 3.2, eq. 5-8)."""

from .decomposers import (
    BORDERS,
    CrossAttentionDecomposer,
    IdenticalDecomposer,
    MaskDecomposer,
    binarize,
    keep_to_prompts,
    masks_to_prompts,
    morphological_open,
    opening_iterations,
    window_map_area,
    window_map_bounds,
    word_masks,
    word_window_fractions,
)

__all__ = [
    "BORDERS",
    "CrossAttentionDecomposer",
    "IdenticalDecomposer",
    "MaskDecomposer",
    "binarize",
    "keep_to_prompts",
    "masks_to_prompts",
    "morphological_open",
    "opening_iterations",
    "window_map_area",
    "window_map_bounds",
    "word_masks",
    "word_window_fractions",
]
