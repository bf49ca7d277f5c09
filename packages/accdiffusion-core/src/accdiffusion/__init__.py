"""accdiffusion: training-free higher-resolution image generation.

AccDiffusion (patch-content-aware prompts, dilated sampling with window
interaction) on the DemoFusion pipeline (progressive upscaling, skip
residual, MultiDiffusion local windows), for SDXL and SD 1.5 / 2.1.
"""

from .adapters import ModelAdapter, SDAdapter, SDXLAdapter
from .api import generate
from .errors import AccDiffusionError, ModelError, PluginError, SettingsError
from .loading import load_pipeline
from .output import write_run
from .sampler import PhaseInfo, Result, Sampler
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
    "ModelAdapter",
    "PhaseInfo",
    "Result",
    "SDAdapter",
    "SDXLAdapter",
    "Sampler",
    "generate",
    "load_pipeline",
    "write_run",
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
