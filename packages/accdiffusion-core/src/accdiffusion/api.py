"""The one-call Python API."""

from __future__ import annotations

import os
import time
from typing import Any, Optional, Union

import attrs
from PIL import Image, UnidentifiedImageError

from .errors import ModelError, PluginError, SettingsError
from .loading import inspect_folder, load_pipeline
from .output import build_record
from .plugins import NO_GLOBAL_GUIDANCE, PluginHost
from .sampler import ProgressFactory, Result, Sampler
from .settings import Settings, plan_sizes
from .stages import STAGES

DEFAULT_MODEL = "shapes"


def resolve_model(model: Optional[str], host: PluginHost) -> str:
    """A model location from a registered name, a path or a hub id; ``None``
    means the registered default model ``shapes``."""
    if model is None:
        location = host.model_location(DEFAULT_MODEL)
        if location is None:
            raise ModelError("no model given and the default model 'shapes' is not installed "
                             "(pip install packages/accdiffusion-shapes, or pass a model)")
        return location
    return host.model_location(model) or model


def load_image(path: Union[str, os.PathLike]) -> Image.Image:
    """Open an input image fully, or raise :class:`SettingsError` naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise SettingsError(f"image={str(path)!r} cannot be read as an image: {exc}") from exc


def check_stage_names(settings: Settings, host: PluginHost, overrides: dict[str, Any]) -> None:
    """Raise :class:`PluginError` for a stage name no installed plugin registered."""
    for stage in STAGES:
        if stage in overrides:
            continue
        name = getattr(settings, stage)
        if stage == "global_guidance" and name == NO_GLOBAL_GUIDANCE:
            continue
        host.registry.get(stage, name)


def generate(
    prompt: str,
    *,
    model: Optional[str] = None,
    model_config: Optional[str] = None,
    pipeline: Any = None,
    image: Union[None, str, os.PathLike, Image.Image] = None,
    host: Optional[PluginHost] = None,
    progress: Optional[ProgressFactory] = None,
    prompt_decomposer: Any = None,
    tiler: Any = None,
    global_guidance: Any = None,
    upscaler: Any = None,
    **options: Any,
) -> Result:
    """Generate one image far above the model's native size.

    ``options`` are :class:`Settings` fields (``height``, ``width``, ``scale``,
    ``steps``, ``seed``, ``c``, ...). ``model`` is a registered model name, a
    local diffusers folder, a single-file checkpoint or a hub id (default: the
    ``shapes`` model), with ``model_config`` naming the configs of a
    single-file checkpoint; or pass a loaded ``pipeline``. Stage arguments take a
    registered name or a stage object; ``global_guidance="none"`` switches
    the global path off. ``image`` upscales a given image instead of
    generating phase 1. A registered model's recommended settings apply
    where ``options`` do not say otherwise. Every bad value is reported
    before the model loads.
    """
    overrides = {}
    for stage, value in (("prompt_decomposer", prompt_decomposer), ("tiler", tiler),
                         ("global_guidance", global_guidance), ("upscaler", upscaler)):
        if isinstance(value, str):
            options[stage] = value
        elif value is not None:
            overrides[stage] = value
    host = host or PluginHost()
    model_name = DEFAULT_MODEL if model is None and pipeline is None else model
    defaults = host.model_defaults(model_name) if pipeline is None else {}
    settings = Settings(prompt=prompt, **{**defaults, **options})
    check_stage_names(settings, host, overrides)
    init_image = load_image(image) if isinstance(image, (str, os.PathLike)) else image
    location = None
    if pipeline is None:
        location = resolve_model(model, host)
        info = inspect_folder(location)
        if info is not None:
            plan_sizes(settings, info["native_size"], info["vae_scale_factor"])
        pipeline = load_pipeline(location, settings.dtype, settings.device, offload=settings.offload,
                                 single_file_config=model_config)
    sampler = Sampler.from_pipeline(pipeline, settings, host=host, **overrides)
    start = time.perf_counter()
    result = sampler(settings, image=init_image, progress=progress)
    record = build_record(result, settings, sampler, model=location, seconds=time.perf_counter() - start)
    record["model"]["name"] = model_name
    record["model"]["defaults"] = defaults
    return attrs.evolve(result, record=record)
