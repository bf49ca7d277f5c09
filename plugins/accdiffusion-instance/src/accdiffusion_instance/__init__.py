"""Instance-aware patch prompts for accdiffusion (the ``instance`` prompt decomposer)."""

from .decomposer import (
    BACKGROUND_MODES,
    InstanceDecomposer,
    chosen_windows,
    connected_components,
    group_instances,
    region_window_shares,
    word_instances,
)

__all__ = [
    "BACKGROUND_MODES",
    "InstanceDecomposer",
    "chosen_windows",
    "connected_components",
    "group_instances",
    "region_window_shares",
    "word_instances",
]
