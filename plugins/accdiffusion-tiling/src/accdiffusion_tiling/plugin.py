"""The ``sliding_window`` tiler, as a registration list."""

from __future__ import annotations

from accdiffusion.plugins import StageEntry, StagePlugin

from .tiler import SlidingWindowTiler

plugin = StagePlugin([
    StageEntry("tiler", "sliding_window", SlidingWindowTiler,
               "MultiDiffusion sliding windows with DemoFusion random jitter"),
])
