"""Segment Anything masks for AccDiffusion's patch-content-aware prompts (the ``sam`` decomposer)."""

from .decomposer import SamDecomposer, peak_points, pool_masks, sam_word_masks, word_peaks
from .segmenter import DEFAULT_MODEL, Point, SamSegmenter, Segmenter

__all__ = [
    "DEFAULT_MODEL",
    "Point",
    "SamDecomposer",
    "SamSegmenter",
    "Segmenter",
    "peak_points",
    "pool_masks",
    "sam_word_masks",
    "word_peaks",
]
