"""Global-path strategies for accdiffusion: DemoFusion dilated sampling and
AccDiffusion dilated sampling with window interaction."""

from .guidance import (
    DilatedGuidance,
    WindowInteractionGuidance,
    apply_permutation,
    from_dilated_samples,
    gaussian_kernel,
    invert_permutation,
    pad_to_multiple,
    random_permutation,
    smooth_latents,
    to_dilated_samples,
)

__all__ = [
    "DilatedGuidance",
    "WindowInteractionGuidance",
    "apply_permutation",
    "from_dilated_samples",
    "gaussian_kernel",
    "invert_permutation",
    "pad_to_multiple",
    "random_permutation",
    "smooth_latents",
    "to_dilated_samples",
]
