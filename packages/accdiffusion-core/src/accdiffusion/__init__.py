"""accdiffusion: training-free higher-resolution image generation.

AccDiffusion (patch-content-aware prompts, dilated sampling with window
interaction) on the DemoFusion pipeline (progressive upscaling, skip
residual, MultiDiffusion local windows), for SDXL and SD 1.5 / 2.1, and
for any model family a plugin registers.
"""

from typing import TYPE_CHECKING

# The names below are imported on first use (PEP 562), so that the command line
# starts without torch and diffusers and can answer Ctrl-C during start-up.
_LAZY = {
    "ModelAdapter": "models", "ModelFamily": "models", "SDAdapter": "models", "SDXLAdapter": "models",
    "UNetAdapter": "models",
    "generate": "api",
    "AccDiffusionError": "errors", "ModelError": "errors", "PluginError": "errors", "ResourceError": "errors",
    "SettingsError": "errors",
    "load_pipeline": "loading",
    "write_run": "output",
    "PhaseInfo": "sampler", "Result": "sampler", "Sampler": "sampler",
    "PluginHost": "plugins", "StageEntry": "registration", "StagePlugin": "registration", "hookimpl": "hookspecs",
    "option": "options",
    "DEFAULT_NEGATIVE_PROMPT": "settings", "Plan": "settings", "Settings": "settings", "plan_sizes": "settings",
    "GlobalGuidance": "stages", "PromptDecomposer": "stages", "Tiler": "stages", "Upscaler": "stages",
    "AttentionMaps": "types", "Conditioning": "types", "DecomposeRequest": "types", "GuidanceRequest": "types",
    "PatchPrompts": "types", "ViewBatchRequest": "types", "Window": "types", "WindowLayout": "types",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors
    from .models import ModelAdapter, ModelFamily, SDAdapter, SDXLAdapter, UNetAdapter
    from .api import generate
    from .errors import AccDiffusionError, ModelError, PluginError, SettingsError
    from .loading import load_pipeline
    from .output import write_run
    from .sampler import PhaseInfo, Result, Sampler
    from .hookspecs import hookimpl
    from .options import option
    from .plugins import PluginHost
    from .registration import StageEntry, StagePlugin
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
    from .errors import ResourceError

__version__ = "0.1.0"

__all__ = [
    "AccDiffusionError",
    "AttentionMaps",
    "ModelAdapter",
    "ModelFamily",
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
    "ResourceError",
    "PluginHost",
    "PromptDecomposer",
    "Settings",
    "SettingsError",
    "StageEntry",
    "StagePlugin",
    "Tiler",
    "UNetAdapter",
    "Upscaler",
    "ViewBatchRequest",
    "Window",
    "WindowLayout",
    "hookimpl",
    "option",
    "plan_sizes",
]
