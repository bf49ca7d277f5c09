"""accdiffusion: training-free higher-resolution image generation.

AccDiffusion (patch-content-aware prompts, dilated sampling with window
interaction) on the DemoFusion pipeline (progressive upscaling, skip
residual, MultiDiffusion local windows), for SDXL and SD 1.5 / 2.1.
"""

from .errors import AccDiffusionError, ModelError, PluginError, SettingsError
from .plugins import PluginHost, hookimpl
from .settings import DEFAULT_NEGATIVE_PROMPT, Plan, Settings, plan_sizes
from .stages import GlobalGuidance, PromptDecomposer, Tiler, Upscaler
from .types import (
    AttentionMaps,
    Conditioning,
    DecomposeRequest,
    GuidanceRequest,
    PatchPrompts,
    ViewBatchRequest,
    Window,
    WindowLayout,
)

__version__ = "0.1.0"

__all__ = [
    "AccDiffusionError",
    "AttentionMaps",
    "Conditioning",
    "DEFAULT_NEGATIVE_PROMPT",
    "DecomposeRequest",
    "GlobalGuidance",
    "GuidanceRequest",
    "ModelError",
    "PatchPrompts",
    "Plan",
    "PluginError",
    "PluginHost",
    "PromptDecomposer",
    "Settings",
    "SettingsError",
    "Tiler",
    "Upscaler",
    "ViewBatchRequest",
    "Window",
    "WindowLayout",
    "hookimpl",
    "plan_sizes",
]
