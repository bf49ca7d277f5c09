"""Tiny random-weight diffusers pipelines, built fully offline, and a kit for
testing plugins (:mod:`accdiffusion_testing.kit`: plugin hosts, crafted stage
inputs, fake codec and adapter, per-stage contract test classes).

The names are imported on first use, so that the kit does not import
diffusers and transformers (which the tiny pipelines need).
"""

from typing import TYPE_CHECKING

_LAZY = {
    "LATENT_SIZE": "models", "NATIVE_SIZE": "models", "VAE_SCALE_FACTOR": "models",
    "make_tiny_sd15": "models", "make_tiny_sd21": "models", "make_tiny_sdxl": "models",
    "DEFAULT_WORDS": "tokenizer", "write_clip_tokenizer": "tokenizer",
    "FakeAdapter": "kit", "FakeCodec": "kit", "GlobalGuidanceContract": "kit", "PromptDecomposerContract": "kit",
    "RecordingDenoise": "kit", "ScheduleContract": "kit", "StageContract": "kit",
    "StructureGuidanceContract": "kit", "TilerContract": "kit", "UpscalerContract": "kit",
    "attention_maps": "kit", "decompose_request": "kit", "guidance_request": "kit", "host_with": "kit",
    "schedule_request": "kit", "structure_request": "kit", "window_layout": "kit",
}

_SUBMODULES = ("kit", "models", "pytest_plugin", "tokenizer")


def __getattr__(name: str):
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors
    from accdiffusion_testing.kit import (
        FakeAdapter,
        FakeCodec,
        GlobalGuidanceContract,
        PromptDecomposerContract,
        RecordingDenoise,
        ScheduleContract,
        StageContract,
        StructureGuidanceContract,
        TilerContract,
        UpscalerContract,
        attention_maps,
        decompose_request,
        guidance_request,
        host_with,
        schedule_request,
        structure_request,
        window_layout,
    )
    from accdiffusion_testing.models import (
        LATENT_SIZE,
        NATIVE_SIZE,
        VAE_SCALE_FACTOR,
        make_tiny_sd15,
        make_tiny_sd21,
        make_tiny_sdxl,
    )
    from accdiffusion_testing.tokenizer import DEFAULT_WORDS, write_clip_tokenizer

__all__ = sorted(_LAZY)
