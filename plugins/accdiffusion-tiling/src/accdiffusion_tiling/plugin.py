"""Registers the ``sliding_window`` tiler with accdiffusion."""

from __future__ import annotations

from typing import Callable

import accdiffusion

from .tiler import SlidingWindowTiler


@accdiffusion.hookimpl
def accdiffusion_register_tilers(register: Callable[..., None]) -> None:
    """Register :class:`SlidingWindowTiler` as ``sliding_window``."""
    register(
        "sliding_window",
        SlidingWindowTiler.from_settings,
        description="MultiDiffusion sliding windows with DemoFusion random jitter (option: jitter)",
    )
