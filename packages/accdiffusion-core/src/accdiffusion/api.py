"""The one-call Python API."""

from __future__ import annotations

import difflib
import os
import time
from typing import Any, Mapping, Optional, Union

import attrs
from PIL import Image

from .errors import ModelError, PluginError, ResourceError, SettingsError
from .images import MAX_IMAGE_PIXELS, load_image  # noqa: F401 - part of this module's API
from .loading import apply_loras, check_device, check_lora_locations, inspect_folder, load_pipeline
from .output import build_record
from .plugins import NO_GLOBAL_GUIDANCE, PluginHost
from .sampler import ProgressFactory, Result, Sampler
from . import preflight
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


_GENERATE_ARGUMENTS = ("model", "model_config", "pipeline", "image", "host", "progress", "prompt_decomposer",
                       "tiler", "global_guidance", "upscaler", "executor", "structure_guidance")


def check_options(options: dict[str, Any], host: Optional[PluginHost] = None) -> dict[str, Any]:
    """``options`` (keywords of :func:`generate`) with every plugin option's
    alias (``c``, ``sigma``, ``jitter``, ...; see ``accdiffusion plugins
    --options``) moved into ``plugin_options``. Raises :class:`SettingsError`
    for a keyword that is neither one of :func:`generate`'s arguments, nor a
    :class:`Settings` field, nor an alias an installed plugin declares,
    naming the closest valid names first and then all of them."""
    fields = [f.name for f in attrs.fields(Settings) if f.name != "prompt"]
    aliases = host.registry.aliases() if host is not None else {}
    out = dict(options)
    moved = {}
    for key in options:
        if key in fields:
            continue
        if key in aliases:
            moved[key] = out.pop(key)
            continue
        if key == "settings":
            raise SettingsError("settings= is not an option of generate(): pass the settings as keywords, "
                                "generate(prompt, **options), e.g. generate('a cat', steps=30, seed=1)")
        valid = sorted(set(fields) | set(_GENERATE_ARGUMENTS) | set(aliases))
        close = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise SettingsError(f"unknown option {key!r}{hint}; valid options: {', '.join(valid)} (and plugin "
                            "options as plugin_options={'NAME.FIELD': value}: `accdiffusion plugins --options`)")
    given = out.get("plugin_options") or {}
    if moved and isinstance(given, Mapping):  # a bad plugin_options is Settings' to name
        twice = sorted(set(moved) & set(given))
        if twice:
            raise SettingsError(f"option {twice[0]!r} is given twice, as a keyword and in plugin_options")
        out["plugin_options"] = {**given, **moved}
    return out


def selected_stages(settings: Settings, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Each stage's registered name from ``settings``, or its object from ``overrides``."""
    return {stage: overrides.get(stage, getattr(settings, stage)) for stage in STAGES}


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower())


def _out_of_memory(exc: BaseException, phase: str, settings: Settings, size: Optional[tuple[int, int]]) -> ResourceError:
    where = f" during {phase}" if phase else ""
    at = f" at {size[1]}x{size[0]} px" if size else ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    advice = []
    if settings.offload == "none":
        advice.append("--offload model (offload='model')")
    if settings.view_batch_size > 1:
        advice.append(f"a smaller --view-batch-size (now {settings.view_batch_size})")
    if settings.dtype == "float32":
        advice.append("--dtype float16")
    advice.append("a smaller size (VAE decoding is tiled above 2048 px)")
    return ResourceError(f"out of memory{where}{at} on device {settings.device!r} ({first}); try "
                         + ", ".join(advice))


def estimate_cost(settings: Settings, plan: Any, host: PluginHost, overrides: dict[str, Any],
                  location: Optional[str], info: Optional[dict[str, Any]] = None) -> "preflight.Estimate":
    """The preflight estimate of a run on the local folder ``location`` (no
    weights load); ``info``: the folder's :func:`~accdiffusion.loading.inspect_folder` answer."""
    from .sampler import schedule_request_for
    from .schedules import validate_schedule

    schedule = host.create("schedule", overrides.get("schedule", settings.schedule), settings)
    from .models.noise import view_tokens

    tokens = view_tokens(plan.latent_sizes[0], int((info or {}).get("patch_size", 1)))
    request = schedule_request_for(settings, plan, preflight.folder_timesteps(location, settings.scheduler, tokens))
    name = settings.schedule if "schedule" not in overrides else type(overrides["schedule"]).__name__
    schedules = validate_schedule(schedule.plan(request), request, f"schedule {name!r}")
    device = check_device(settings.device)
    gg = overrides.get("global_guidance", settings.global_guidance)
    sg = overrides.get("structure_guidance", settings.structure_guidance)
    controlnet = host.options_for("structure_guidance", sg, settings).get("model") if sg == "controlnet" else None
    info = info or {}
    return preflight.estimate(settings, plan, schedules, device=device, folder=location,
                              latent_channels=int(info.get("latent_channels", 4)),
                              denoiser=str(info.get("denoiser", "unet")),
                              local=settings.local_path, global_path=gg not in (None, NO_GLOBAL_GUIDANCE),
                              controlnet=controlnet)


def estimate_run(prompt: str, *, model: Optional[str] = None, host: Optional[PluginHost] = None,
                 schedule: Any = None, **options: Any) -> "preflight.Estimate":
    """What :func:`generate` with the same arguments would cost (phases, windows,
    UNet evaluations, a peak-memory estimate), from the model's configs only.
    ``model`` must be a registered name or a local diffusers folder."""
    host = host or PluginHost()
    options = check_options(options, host)
    overrides = {} if schedule is None or isinstance(schedule, str) else {"schedule": schedule}
    if isinstance(schedule, str):
        options["schedule"] = schedule
    model_name = DEFAULT_MODEL if model is None else model
    settings = Settings(prompt=prompt, **{**host.model_defaults(model_name), **options})
    check_stage_names(settings, host, overrides)
    host.check_options(settings, selected_stages(settings, overrides))
    location = resolve_model(model, host)
    info = inspect_folder(location, host.families())
    if info is None:
        raise ModelError(f"model {location!r} is not a local diffusers folder: a cost estimate reads the "
                         "folder's configs (download it first, or pass a registered model name)")
    plan = plan_sizes(settings, info["native_size"], info["vae_scale_factor"], int(info.get("patch_size", 1)))
    return estimate_cost(settings, plan, host, overrides, location, info)


def check_stage_names(settings: Settings, host: PluginHost, overrides: dict[str, Any]) -> None:
    """Raise :class:`PluginError` for a stage name no installed plugin registered,
    and for a stage object that does not implement its stage's protocol."""
    from .stages import PROTOCOLS

    for stage, obj in overrides.items():
        protocol = PROTOCOLS.get(stage)
        if protocol is not None and not isinstance(obj, protocol):
            raise PluginError(f"{stage} object {type(obj).__name__} does not implement {protocol.__name__} "
                              f"(pass a registered name, a {protocol.__name__} object or None)")
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
    schedule: Any = None,
    executor: Any = None,
    structure_guidance: Any = None,
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
    before the model loads. ``executor`` builds the run's view executor
    (``Sampler(executor=...)``; default: one process), e.g. an
    :class:`accdiffusion.distributed.DistributedExecutorFactory`.
    """
    if host is not None and not isinstance(host, PluginHost):
        raise SettingsError(f"host={type(host).__name__} is not allowed: a PluginHost or None")
    host = host or PluginHost()
    options = check_options(options, host)
    for arg, value in (("model", model), ("model_config", model_config)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise SettingsError(f"{arg}={value!r} is not allowed: a registered model name, a path or a hub id")
    model = os.fspath(model) if isinstance(model, os.PathLike) else model
    model_config = os.fspath(model_config) if isinstance(model_config, os.PathLike) else model_config
    if progress is not None and not callable(progress):
        raise SettingsError(f"progress={progress!r} is not allowed: a callable progress(description, total) or None")
    overrides = {}
    for stage, value in (("prompt_decomposer", prompt_decomposer), ("tiler", tiler),
                         ("global_guidance", global_guidance), ("upscaler", upscaler),
                         ("schedule", schedule), ("structure_guidance", structure_guidance)):
        if isinstance(value, str):
            options[stage] = value
        elif value is not None:
            overrides[stage] = value
    model_name = DEFAULT_MODEL if model is None and pipeline is None else model
    defaults = host.model_defaults(model_name) if pipeline is None else {}
    settings = Settings(prompt=prompt, **{**defaults, **options})
    check_stage_names(settings, host, overrides)
    host.check_options(settings, selected_stages(settings, overrides))
    check_device(settings.device)
    check_lora_locations(settings.lora)
    init_image = None if image is None else load_image(image)
    location = None
    size: Optional[tuple[int, int]] = None
    phase = {"name": "loading the model"}

    def tracked(desc: str, total: int) -> Any:
        phase["name"] = desc
        return progress(desc, total) if progress is not None else _NoBar()

    try:
        if pipeline is None:
            location = resolve_model(model, host)
            info = inspect_folder(location, host.families())
            if info is not None:
                plan = plan_sizes(settings, info["native_size"], info["vae_scale_factor"], int(info.get("patch_size", 1)))
                size = (plan.height, plan.width)
                preflight.check(estimate_cost(settings, plan, host, overrides, location, info), settings)
            pipeline = load_pipeline(location, settings.dtype, settings.device, offload=settings.offload,
                                     single_file_config=model_config, families=host.families())
        phase["name"] = "preparing the stages"
        sampler = Sampler.from_pipeline(pipeline, settings, host=host, executor=executor, **overrides)
        loras = apply_loras(pipeline, settings.lora)
        start = time.perf_counter()
        result = sampler(settings, image=init_image, progress=tracked)
    except Exception as exc:
        if _is_out_of_memory(exc):
            raise _out_of_memory(exc, phase["name"], settings, size) from exc
        raise
    record = build_record(result, settings, sampler, model=location, seconds=time.perf_counter() - start,
                          processes=int(getattr(executor, "processes", 1)))
    record["model"]["name"] = model_name
    record["model"]["defaults"] = defaults
    record["lora"] = loras
    return attrs.evolve(result, record=record)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
