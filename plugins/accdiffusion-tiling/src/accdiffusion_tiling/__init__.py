"""Sliding-window tiler for accdiffusion's local path (MultiDiffusion views, DemoFusion jitter)."""

from .tiler import SlidingWindowTiler, axis_starts, jitter_bounds

__all__ = ["SlidingWindowTiler", "axis_starts", "jitter_bounds"]
