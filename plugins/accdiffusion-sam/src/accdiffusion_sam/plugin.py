"""Registers the ``sam`` prompt decomposer with accdiffusion."""

from __future__ import annotations

from collections.abc import Callable

import accdiffusion

from .decomposer import SamDecomposer


@accdiffusion.hookimpl
def accdiffusion_register_prompt_decomposers(register: Callable[..., None]) -> None:
    """Register :class:`SamDecomposer` as ``sam``."""
    register(
        "sam",
        SamDecomposer.from_settings,
        description="patch prompts from Segment Anything masks at the cross-attention peaks "
                    "(options: c, sam_model, sam_points)",
    )
