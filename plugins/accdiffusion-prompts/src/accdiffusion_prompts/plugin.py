"""Registers the ``cross_attention`` and ``identical`` prompt decomposers with accdiffusion."""

from __future__ import annotations

from typing import Callable

import accdiffusion

from .decomposers import CrossAttentionDecomposer, IdenticalDecomposer


@accdiffusion.hookimpl
def accdiffusion_register_prompt_decomposers(register: Callable[..., None]) -> None:
    """Register :class:`CrossAttentionDecomposer` and :class:`IdenticalDecomposer`."""
    register(
        "cross_attention",
        CrossAttentionDecomposer.from_settings,
        description="AccDiffusion patch-content-aware prompts from phase-1 cross-attention maps "
        "(options: c, cross_attention.border, cross_attention.per_token)",
    )
    register(
        "identical",
        IdenticalDecomposer.from_settings,
        description="the whole prompt for every window (MultiDiffusion / DemoFusion)",
    )
