"""Every setting of a run, with its default, in one place.

The defaults are those of the AccDiffusion release (which users compare
against), minus its bugs; ``docs/options.md`` lists them with their CLI flags.
:class:`Settings` validates each value on construction and raises
:class:`~accdiffusion.errors.SettingsError` naming the value and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import attrs

from .errors import SettingsError

DEFAULT_NEGATIVE_PROMPT = "blurry, ugly, duplicate, poorly drawn, deformed, mosaic"
DTYPES = ("float32", "float16", "bfloat16")
SCHEDULERS = ("default", "euler", "euler_ancestral", "ddim", "dpmpp", "unipc")
OFFLOAD = ("none", "model", "sequential")


def _check(cond: bool, name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise SettingsError(f"{name}={value!r} is not allowed: {allowed}")


def _positive_int(name: str):
    def check(_inst, _attr, value):
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value, "an integer >= 1")

    return check


def _nonneg_float(name: str):
    def check(_inst, _attr, value):
        _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0,
               name, value, "a finite number >= 0")

    return check


def _optional_size(name: str):
    def check(_inst, _attr, value):
        if value is None:
            return
        _check(isinstance(value, int) and not isinstance(value, bool) and value > 0 and value % 8 == 0,
               name, value, "a positive multiple of 8 (image pixels)")

    return check


def _boolean(name: str):
    def check(_inst, _attr, value):
        _check(isinstance(value, bool), name, value, "a boolean (True or False; strings such as 'false' are refused)")

    return check


def _string(name: str):
    def check(_inst, _attr, value):
        _check(isinstance(value, str), name, value, "a string")

    return check


def _options_dict(value: Any) -> dict:
    _check(isinstance(value, Mapping) and all(isinstance(k, str) and k for k in value), "plugin_options", value,
           "a mapping of option keys (NAME.FIELD, or an alias such as 'c') to values")
    return dict(value)


def _choice(name: str, choices: tuple[str, ...]):
    def check(_inst, _attr, value):
        _check(value in choices, name, value, f"one of {', '.join(choices)}")

    return check


def _stage_name(name: str):
    def check(_inst, _attr, value):
        _check(isinstance(value, str) and value != "", name, value, "a registered plugin name (see `accdiffusion plugins`)")

    return check


def check_stride(value: Any, window: Optional[int] = None) -> int:
    """``value`` if it is a valid local-window stride (an integer >= 1, and at
    most ``window`` once the model's window is known), else :class:`SettingsError`."""
    limit = "at most the window size" if window is None else f"at most the window size {window}"
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1 and (window is None or value <= window),
           "stride", value, f"an integer >= 1 (latent pixels), {limit} latent px")
    return value


def parse_lora(entry: Any) -> tuple[str, float]:
    """``PATH[:SCALE]`` as ``(path, scale)``; the scale defaults to 1. A colon
    followed by something that is neither a number nor part of a path (it holds
    no ``/`` or ``\\``) is a :class:`SettingsError` naming the entry."""
    allowed = "PATH[:SCALE]: a LoRA file, folder or hub id, optionally ':' and a number (default 1.0)"
    _check(isinstance(entry, str) and entry.strip() != "", "lora", entry, allowed)
    path, sep, tail = entry.rpartition(":")
    if not sep or "/" in tail or "\\" in tail:
        return entry, 1.0
    try:
        scale = float(tail)
    except ValueError:
        raise SettingsError(f"lora={entry!r} is not allowed: the scale {tail!r} is not a number; {allowed}") from None
    _check(math.isfinite(scale), "lora", entry, allowed + " (a finite scale)")
    _check(path.strip() != "", "lora", entry, allowed)
    return path, scale


def _lora_entries(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SettingsError(f"lora={value!r} is not allowed: a list of PATH[:SCALE] strings")
    for entry in value:
        parse_lora(entry)
    return tuple(value)


@attrs.frozen(kw_only=True)
class Settings:
    """The settings of one run.

    Sizes are in image pixels; ``height``/``width`` default to ``scale`` times
    the model's native size. ``seed=None`` draws a seed, which the run record
    keeps. Stage fields name registered plugins; ``plugin_options`` holds the
    options of the selected plugins, ``{"NAME.FIELD": value}`` or an alias a
    plugin declares (``{"c": 0.5}``), checked by the plugin host against
    the options each plugin declares (``accdiffusion plugins --options``).
    Stage knobs (the patch-prompt threshold ``c``, ``sigma``, ``jitter``, ...)
    belong to their plugins, not to these settings.
    """

    prompt: str = attrs.field(validator=_string("prompt"))
    negative_prompt: str = attrs.field(default=DEFAULT_NEGATIVE_PROMPT, validator=_string("negative_prompt"))
    height: Optional[int] = attrs.field(default=None, validator=_optional_size("height"))
    width: Optional[int] = attrs.field(default=None, validator=_optional_size("width"))
    scale: int = attrs.field(default=2, validator=_positive_int("scale"))
    steps: int = attrs.field(default=50, validator=_positive_int("steps"))
    seed: Optional[int] = attrs.field(default=None)
    guidance_scale: float = attrs.field(default=7.5, validator=_nonneg_float("guidance_scale"))
    multi_guidance_scale: float = attrs.field(default=7.5, validator=_nonneg_float("multi_guidance_scale"))
    stride: Optional[int] = attrs.field(default=None)
    view_batch_size: int = attrs.field(default=16, validator=_positive_int("view_batch_size"))
    cosine_scale_1: float = attrs.field(default=3.0, validator=_nonneg_float("cosine_scale_1"))
    cosine_scale_2: float = attrs.field(default=1.0, validator=_nonneg_float("cosine_scale_2"))
    progressive: bool = attrs.field(default=True, validator=_boolean("progressive"))
    skip_residual: bool = attrs.field(default=True, validator=_boolean("skip_residual"))
    local_path: bool = attrs.field(default=True, validator=_boolean("local_path"))
    renormalize: bool = attrs.field(default=True, validator=_boolean("renormalize"))
    scheduler: str = attrs.field(default="default", validator=_choice("scheduler", SCHEDULERS))
    prompt_decomposer: str = attrs.field(default="cross_attention", validator=_stage_name("prompt_decomposer"))
    tiler: str = attrs.field(default="sliding_window", validator=_stage_name("tiler"))
    global_guidance: str = attrs.field(default="window_interaction", validator=_stage_name("global_guidance"))
    upscaler: str = attrs.field(default="bicubic_latent", validator=_stage_name("upscaler"))
    schedule: str = attrs.field(default="paper", validator=_stage_name("schedule"))
    structure_guidance: str = attrs.field(default="none", validator=_stage_name("structure_guidance"))
    lora: tuple[str, ...] = attrs.field(default=(), converter=lambda v: _lora_entries(v))
    attention_factor: int = attrs.field(default=4, validator=_positive_int("attention_factor"))
    attention_strength: float = attrs.field(default=0.3)
    dtype: str = attrs.field(default="float32", validator=_choice("dtype", DTYPES))
    device: str = attrs.field(default="auto", validator=_string("device"))
    offload: str = attrs.field(default="none", validator=_choice("offload", OFFLOAD))
    save_stages: bool = attrs.field(default=False, validator=_boolean("save_stages"))
    max_phases: int = attrs.field(default=16, validator=_positive_int("max_phases"))
    max_unet_evaluations: int = attrs.field(default=500_000, validator=_positive_int("max_unet_evaluations"))
    max_memory_gb: Optional[float] = attrs.field(default=None)
    plugin_options: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda m: _options_dict(m))

    @seed.validator
    def _seed(self, _attr, value):
        if value is not None:
            _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63,
                   "seed", value, "an integer in [0, 2**63) or None")

    @max_memory_gb.validator
    def _max_memory(self, _attr, value):
        if value is not None:
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                   and value > 0, "max_memory_gb", value, "a number > 0 (GiB) or None for the device's free memory")

    @stride.validator
    def _stride(self, _attr, value):
        if value is not None:
            check_stride(value)

    @attention_strength.validator
    def _strength(self, _attr, value):
        _check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1,
               "attention_strength", value,
               "a number in (0, 1]")

    def __attrs_post_init__(self) -> None:
        if not self.local_path and self.global_guidance == "none":
            raise SettingsError("local_path=False with global_guidance='none' leaves nothing to sample: "
                                "keep the local path or choose a global guidance")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the run record."""
        return attrs.asdict(self)


@attrs.frozen
class Plan:
    """Sizes of every phase, resolved against a model's native size.

    ``native``: native image size; ``factor``: ``S``; ``latent_sizes[k]``: the
    latent ``(h, w)`` of phase ``scales[k]``; ``window``: native latent size;
    ``stride``: local-path stride in latent pixels.
    """

    height: int
    width: int
    native: int
    vae_scale_factor: int
    factor: int
    scales: tuple[int, ...]
    latent_sizes: tuple[tuple[int, int], ...]
    window: int
    stride: int

    def latent_size(self, scale: int) -> tuple[int, int]:
        return self.latent_sizes[self.scales.index(scale)]


def plan_sizes(settings: Settings, native: int, vae_scale_factor: int, patch_size: int = 1) -> Plan:
    """Resolve the phases of a run (method section 0).

    ``S = floor(max(H, W) / native)``; phase 1 runs at ``(H/S, W/S)``; phase
    ``s`` at ``s/S`` of the target, the last one exactly at the target size.
    Raises :class:`SettingsError` for a size below the native size, a stride
    larger than the window, or a phase whose latent the model's
    ``patch_size`` does not divide.
    """
    height = settings.height if settings.height is not None else settings.scale * native
    width = settings.width if settings.width is not None else settings.scale * native
    for name, value in (("height", height), ("width", width)):
        _check(value % vae_scale_factor == 0 and value % 8 == 0, name, value,
               f"a multiple of 8 and of the VAE factor {vae_scale_factor}")
        _check(value >= native, name, value, f"at least the model's native size {native} px")
    factor = max(height, width) // native
    phases = factor if settings.progressive else min(factor, 2)
    if phases > settings.max_phases:
        from .errors import ResourceError

        raise ResourceError(
            f"{width}x{height} px from {native} px native means factor {factor}: {phases} phases, more than "
            f"max_phases={settings.max_phases}; ask for a smaller size or scale, use a model with a larger native "
            f"size, --no-progressive, or raise --max-phases")
    window = native // vae_scale_factor
    stride = check_stride(settings.stride, window) if settings.stride is not None else window // 2
    lat_h, lat_w = height // vae_scale_factor, width // vae_scale_factor
    if settings.progressive:
        scales = tuple(range(1, factor + 1))
    else:
        scales = (1, factor) if factor > 1 else (1,)

    def size(s: int) -> tuple[int, int]:
        if s == factor:
            return (lat_h, lat_w)
        return (max(1, round(lat_h * s / factor)), max(1, round(lat_w * s / factor)))

    sizes = tuple(size(s) for s in scales)
    for s, (h, w) in zip(scales, sizes):
        if patch_size > 1 and (h % patch_size or w % patch_size):
            step = patch_size * vae_scale_factor * factor
            raise SettingsError(
                f"height={height} width={width} is not allowed for this model: phase {s} would be "
                f"{w * vae_scale_factor}x{h * vae_scale_factor} px ({w}x{h} latent), which its {patch_size}x"
                f"{patch_size} patches do not divide; allowed: a height and width that are multiples of {step} px "
                f"at factor {factor}")
    return Plan(height, width, native, vae_scale_factor, factor, scales, sizes, window, stride)
