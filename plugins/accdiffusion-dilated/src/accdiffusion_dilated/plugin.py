"""Registers the ``window_interaction`` and ``dilated`` global guidances with accdiffusion."""

from __future__ import annotations

from typing import Callable

import accdiffusion

from .guidance import DilatedGuidance, WindowInteractionGuidance


@accdiffusion.hookimpl
def accdiffusion_register_global_guidances(register: Callable[..., None]) -> None:
    """Register :class:`WindowInteractionGuidance` and :class:`DilatedGuidance`."""
    register(
        "window_interaction",
        WindowInteractionGuidance.from_settings,
        description="AccDiffusion dilated sampling with window interaction "
        "(options: sigma, cosine_scale_3, gaussian_smoothing)",
    )
    register(
        "dilated",
        DilatedGuidance.from_settings,
        description="DemoFusion dilated sampling (options: sigma, cosine_scale_3, gaussian_smoothing)",
    )
