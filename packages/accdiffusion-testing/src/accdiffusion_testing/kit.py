"""A kit for testing accdiffusion plugins: hosts, crafted stage inputs, fakes
and one contract test class per stage.

A plugin's test suite proves that its stage obeys the stage's contract by
inheriting the contract class of the stage (pytest collects the subclass,
whose name must start with ``Test``)::

    from accdiffusion_testing.kit import TilerContract
    from accdiffusion_grid.plugin import plugin

    class TestGridTiler(TilerContract):
        plugin = plugin          # the StagePlugin the entry point names
        name = "grid"            # the registered name
        entry_point = "grid"     # the entry-point name in the "accdiffusion" group
        options = {"step": 2}    # optional: plugin options of the object under test

The inherited tests check the registration (the plugin registers ``name``
for the stage; a :class:`~accdiffusion.PluginHost` builds it from
:class:`~accdiffusion.Settings`; the installed entry point loads the plugin
object), the declared options (defaults allowed, bad values refused with a
:class:`~accdiffusion.SettingsError` naming ``NAME.FIELD`` and the value, an
option refused while another plugin of the stage is selected, aliases), the
stage protocol and the stage's semantics (see each contract class). The
object under test comes from :meth:`StageContract.make`, which a subclass may
override (to pass a fake model, say).

Every check is also a plain function (``check_*``) that raises
:class:`AssertionError` with a message saying what is wrong, for use outside
the contract classes.

Beside the contracts: :func:`host_with` (a plugin host with exactly the
given plugins), :func:`attention_maps` and the request builders
(:func:`window_layout`, :func:`decompose_request`, :func:`guidance_request`,
:func:`schedule_request`, :func:`structure_request`), :class:`FakeCodec` and
:class:`FakeAdapter` (a model adapter without a model, recording its calls).
This module needs only pytest, torch and accdiffusion.
"""

from __future__ import annotations

import contextlib
import os
import types
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional, Sequence, Union

import attrs
import pytest
import torch
import torch.nn.functional as F

from accdiffusion.errors import AccDiffusionError, PluginError, SettingsError
from accdiffusion.options import OptionSpec, option, stage_values
from accdiffusion.plugins import ALLOW_ENV, ENTRY_POINT_GROUP, PluginHost, StageEntry, StagePlugin
from accdiffusion.settings import Settings
from accdiffusion.stages import PROTOCOLS, STAGES
from accdiffusion.types import (
    AttentionMaps,
    Conditioning,
    ControlViews,
    DecomposeRequest,
    GlobalViews,
    GuidanceRequest,
    PatchPrompts,
    PhaseSchedule,
    ScheduleRequest,
    StructureRequest,
    ViewBatchRequest,
    Window,
    WindowLayout,
)

__all__ = [
    "STAND_IN",
    "Call",
    "FakeAdapter",
    "FakeCodec",
    "GlobalGuidanceContract",
    "PromptDecomposerContract",
    "RecordingDenoise",
    "ScheduleContract",
    "StageContract",
    "StructureGuidanceContract",
    "TilerContract",
    "UpscalerContract",
    "attention_maps",
    "bad_option_values",
    "check_aliases",
    "check_built",
    "check_decomposer",
    "check_decomposer_refuses_mismatched_maps",
    "check_entry_point",
    "check_global_guidance",
    "check_global_guidance_refuses_batched_latents",
    "check_layout",
    "check_option_defaults",
    "check_options_need_selection",
    "check_registration",
    "check_refused_option_values",
    "check_schedule",
    "check_structure_guidance",
    "check_tiler_coverage",
    "check_tiler_refuses_bad_input",
    "check_tiler_reproducible",
    "check_upscaler",
    "check_word_masks",
    "decompose_request",
    "generator",
    "guidance_request",
    "host_with",
    "jittered",
    "option_text",
    "sample_image",
    "schedule_request",
    "stand_in_plugin",
    "structure_request",
    "window_layout",
]


def _expect(condition: Any, message: str) -> None:
    """Raise :class:`AssertionError` with ``message`` unless ``condition`` holds
    (explicit, so that the checks also hold under ``python -O``)."""
    if not condition:
        raise AssertionError(message)


def generator(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (what a run hands its stages)."""
    return torch.Generator("cpu").manual_seed(seed)


# -- hosts -----------------------------------------------------------------------------


def _builtins() -> Any:
    from accdiffusion.builtins import BUILTINS

    return BUILTINS


def host_with(*plugins: Any, entry_points: bool = False) -> PluginHost:
    """A fresh :class:`~accdiffusion.PluginHost` with exactly ``plugins`` (and the
    core's own stages), loading no installed entry point unless ``entry_points``.

    Pass the plugin *object* (``accdiffusion_x.plugin.plugin``, a
    :class:`~accdiffusion.StagePlugin`), not its module: a module whose
    ``plugin`` attribute is a ``StagePlugin`` is refused with a
    :class:`TypeError`, since registering it would register nothing.
    ``None`` and the core's own registration list are skipped (the host has
    them already), as are repeats of one object.
    """
    builtins = _builtins()
    chosen: list[Any] = []
    for p in plugins:
        if p is None or p is builtins or any(p is q for q in chosen):
            continue
        if isinstance(p, types.ModuleType) and isinstance(getattr(p, "plugin", None), StagePlugin):
            raise TypeError(f"host_with got the module {p.__name__!r}; pass its StagePlugin "
                            f"({p.__name__}.plugin), which is what the entry point names")
        chosen.append(p)
    return PluginHost(chosen, entry_points=entry_points)


@contextlib.contextmanager
def _environment(name: str, value: Optional[str]) -> Iterator[None]:
    """``os.environ[name]`` set to ``value`` (removed for ``None``) inside the block."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# -- crafted inputs --------------------------------------------------------------------


def attention_maps(words: Union[str, Sequence[str]], masks_or_maps: Union[torch.Tensor, Sequence[Any]],
                   latent_per_map: int = 4) -> AttentionMaps:
    """Phase-1 attention maps made by hand, one per word.

    ``words``: the words (a string is split on whitespace). ``masks_or_maps``:
    one ``(h_a, w_a)`` map per word, as a ``(n_words, h_a, w_a)`` tensor or a
    sequence of 2-D tensors (or nested lists); bool masks become maps of 1.0
    inside and 0.0 outside, float maps are used as they are. A mask that is
    neither empty nor full comes back unchanged from the ``cross_attention``
    binarisation (a map above its mean); a flat map binarises to nothing.
    ``latent_per_map``: latent pixels per map pixel at phase 1 (4 for SDXL and SD).

    Returns :class:`~accdiffusion.AttentionMaps` with ``maps`` ``(h_a, w_a,
    n_words)`` float32 and no per-token maps. Raises ``ValueError`` when the
    counts or the map sizes disagree.
    """
    words = tuple(words.split()) if isinstance(words, str) else tuple(words)
    if isinstance(masks_or_maps, torch.Tensor):
        if masks_or_maps.dim() != 3:
            raise ValueError(f"masks_or_maps: a (n_words, h_a, w_a) tensor, got shape {tuple(masks_or_maps.shape)}")
        stacked = masks_or_maps
    else:
        per_word = [torch.as_tensor(m) for m in masks_or_maps]
        if not per_word:
            raise ValueError("no maps given: pass a (0, h_a, w_a) tensor for a prompt without words")
        if any(m.dim() != 2 for m in per_word) or len({tuple(m.shape) for m in per_word}) != 1:
            raise ValueError(f"every map must be 2-D of one size, got shapes {[tuple(m.shape) for m in per_word]}")
        stacked = torch.stack([m.to(torch.float32) if m.dtype != torch.bool else m for m in per_word])
    if stacked.shape[0] != len(words):
        raise ValueError(f"{stacked.shape[0]} maps for {len(words)} words {words}")
    if not isinstance(latent_per_map, int) or isinstance(latent_per_map, bool) or latent_per_map < 1:
        raise ValueError(f"latent_per_map={latent_per_map!r}: a positive integer")
    maps = stacked.to(torch.float32).permute(1, 2, 0).contiguous()
    return AttentionMaps(maps, words, latent_per_map)


def window_layout(height: int, width: int, window: int, stride: Optional[int] = None, *,
                  pad: int = 0) -> WindowLayout:
    """A regular grid of windows covering a ``height x width`` latent canvas.

    Along each axis windows start at ``0, stride, 2 stride, ...`` (``stride``
    defaults to half the window), the last one moved back to end at the
    border; each window is ``min(window, side)`` long. ``pad``: the layout's
    padding, every window moved by ``+pad`` (so the windows sit where they
    would without it). Row-major order.
    """
    stride = stride if stride is not None else max(1, window // 2)
    if height < 1 or width < 1 or window < 1 or not 1 <= stride <= window or pad < 0:
        raise ValueError(f"window_layout({height}, {width}, {window}, {stride}, pad={pad}): sizes must be "
                         "positive and the stride in [1, window]")

    def starts(side: int) -> list[int]:
        size = min(window, side)
        count = 1 if side <= window else -(-(side - window) // stride) + 1
        return [min(k * stride, side - size) for k in range(count)]

    h, w = min(window, height), min(window, width)
    wins = tuple(Window(t + pad, l + pad, h, w) for t in starts(height) for l in starts(width))
    return WindowLayout(wins, height, width, pad)


def jittered(layout: WindowLayout, radius: int, gen: Optional[torch.Generator] = None) -> WindowLayout:
    """``layout``'s windows moved by a random integer in ``[-radius, radius]``
    per axis (drawn from ``gen``, default seed 0), on the canvas padded by
    ``layout.pad + radius``: windows reaching into the padding, as a jittering
    tiler gives them (coverage is not kept: an input for decomposers and
    structure guidances, not a tiler's answer)."""
    gen = gen or generator(0)
    shifts = torch.randint(-radius, radius + 1, (len(layout), 2), generator=gen).tolist()
    wins = tuple(Window(w.top + radius + dy, w.left + radius + dx, w.height, w.width)
                 for w, (dy, dx) in zip(layout.windows, shifts))
    return WindowLayout(wins, layout.canvas_height, layout.canvas_width, layout.pad + radius)


def sample_image(width: int = 64, height: int = 64) -> Any:
    """A small RGB PIL image with clear edges (a gradient background, a light
    square and a dark disc): a phase-1 or previous-phase image for stages that
    look at pixels."""
    from PIL import Image, ImageDraw

    xs = torch.linspace(0, 255, width).round().to(torch.uint8)
    ramp = xs.view(1, width, 1).expand(height, width, 3).contiguous()
    image = Image.frombytes("RGB", (width, height), bytes(ramp.flatten().tolist()))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 8, height // 8, width // 2, height // 2), fill=(240, 240, 240))
    draw.ellipse((width // 2, height // 2, width - width // 8, height - height // 8), fill=(10, 10, 10))
    return image


def decompose_request(prompt: str = "a cat and a dog on a sofa", layout: Optional[WindowLayout] = None,
                      scale: int = 2, attention: Optional[AttentionMaps] = None,
                      low_res_image: Any = None) -> DecomposeRequest:
    """A :class:`~accdiffusion.DecomposeRequest`: ``layout`` defaults to
    :func:`window_layout` ``(64, 64, 32)`` (3x3 windows, phase 2 of a 32x32
    latent phase 1); ``low_res_image`` may be a PIL image or the callable the
    sampler passes."""
    layout = layout if layout is not None else window_layout(64, 64, 32)
    if low_res_image is not None and not callable(low_res_image):
        image = low_res_image
        low_res_image = lambda: image  # noqa: E731
    return DecomposeRequest(prompt, layout, scale, attention, low_res_image)


class RecordingDenoise:
    """A stand-in for the sampler's ``denoise``: records every
    :class:`~accdiffusion.ViewBatchRequest` and returns
    ``latents * factor + offset * i`` for the view at batch position ``i``.

    With ``offset=0`` (the default) a view's output does not depend on the
    batch it comes in, as with the sampler's executor; a non-zero ``offset``
    tells the views of one call apart in hand-worked tests."""

    def __init__(self, factor: float = 0.5, offset: float = 0.0) -> None:
        self.factor = factor
        self.offset = offset
        self.requests: list[ViewBatchRequest] = []

    def __call__(self, request: ViewBatchRequest) -> torch.Tensor:
        self.requests.append(request)
        x = request.latents
        index = torch.arange(x.shape[0], dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1)))
        return x * self.factor + self.offset * index


def guidance_request(latents: torch.Tensor, scale: int = 2, denoise: Optional[Callable[[ViewBatchRequest], Any]] = None,
                     gen: Optional[torch.Generator] = None, *, timestep: float = 500.0, step_index: int = 0,
                     cosine_factor: float = 0.5, guidance_scale: float = 7.5) -> GuidanceRequest:
    """A :class:`~accdiffusion.GuidanceRequest` for the canvas ``latents``
    ``(1, C, H, W)`` at phase ``scale``; ``denoise`` defaults to a
    :class:`RecordingDenoise`, ``gen`` to none."""
    return GuidanceRequest(latents=latents, scale=scale, timestep=timestep, step_index=step_index,
                           cosine_factor=cosine_factor, guidance_scale=guidance_scale,
                           denoise=denoise if denoise is not None else RecordingDenoise(), generator=gen)


def schedule_request(scales: Sequence[int] = (2,), steps: int = 20, *,
                     latent_sizes: Optional[Sequence[tuple[int, int]]] = None, factor: Optional[int] = None,
                     num_train_timesteps: int = 1000, scheduler: str = "default") -> ScheduleRequest:
    """A :class:`~accdiffusion.types.ScheduleRequest` for upscaling phases
    ``scales`` (latent sizes ``16 s x 16 s`` unless given, ``factor`` the
    largest scale); ``timesteps(n)`` gives ``n`` evenly spaced integer
    timesteps from ``num_train_timesteps - 1`` down to 0."""
    scales = tuple(scales)
    sizes = tuple(latent_sizes) if latent_sizes is not None else tuple((16 * s, 16 * s) for s in scales)
    last = num_train_timesteps - 1

    def timesteps(n: int) -> tuple[int, ...]:
        if n < 1:
            raise ValueError(f"timesteps({n}): at least one step")
        return tuple(int(round(last - k * last / max(1, n - 1))) for k in range(n)) if n > 1 else (last,)

    return ScheduleRequest(scales=scales, latent_sizes=sizes, steps=steps,
                           factor=factor if factor is not None else max(scales, default=1),
                           num_train_timesteps=num_train_timesteps, scheduler=scheduler, timesteps=timesteps)


def structure_request(layout: Optional[WindowLayout] = None, *, scale: int = 2, vae_scale_factor: int = 2,
                      steps: int = 10, previous_image: Any = None,
                      latent_size: Optional[tuple[int, int]] = None) -> StructureRequest:
    """A :class:`~accdiffusion.types.StructureRequest`: ``layout`` defaults to
    :func:`window_layout` ``(64, 64, 32)``, the phase's latent size to the
    layout's canvas, ``previous_image`` (a PIL image or a callable) to a
    :func:`sample_image` of half the phase's image size (the previous phase)."""
    layout = layout if layout is not None else window_layout(64, 64, 32)
    size = latent_size if latent_size is not None else (layout.canvas_height, layout.canvas_width)
    if previous_image is None:
        h, w = (max(1, n * vae_scale_factor // 2) for n in size)
        image = sample_image(w, h)
        previous = lambda: image  # noqa: E731
    elif callable(previous_image):
        previous = previous_image
    else:
        previous = lambda: previous_image  # noqa: E731
    return StructureRequest(scale=scale, layout=layout, latent_size=tuple(size), vae_scale_factor=vae_scale_factor,
                            steps=steps, previous_image=previous)


# -- fakes -----------------------------------------------------------------------------


@attrs.frozen
class Call:
    """One recorded call of a fake: the method's ``name`` and what it got."""

    name: str
    args: dict = attrs.field(factory=dict)


def _average_pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``factor x factor`` average pooling, exact on ``repeat_interleave``-d
    values when ``factor`` is a power of two (one 2x2 pool at a time)."""
    if factor & (factor - 1) == 0:
        while factor > 1:
            x = F.avg_pool2d(x, 2)
            factor //= 2
        return x
    return F.avg_pool2d(x, factor)


class FakeCodec:
    """A :class:`~accdiffusion.stages.LatentCodec` without a VAE, exact and recording.

    With ``f = vae_scale_factor`` and ``C = latent_channels``:

    * :meth:`decode_latents`: ``(N, C, h, w)`` to images ``(N, 3, f h, f w)``:
      latent channels ``0..2`` (zeros for missing ones, further channels
      dropped), each latent pixel repeated ``f x f`` times; no clamping.
    * :meth:`encode_images`: images ``(N, 3, H, W)`` (``H``, ``W`` multiples
      of ``f``) to ``(N, C, H / f, W / f)``: the ``f x f`` block averages of
      the 3 channels, followed by zero channels up to ``C`` (or the first
      ``C`` when ``C < 3``). The generator is ignored.

    So ``encode(decode(z))`` is ``z`` and ``decode(encode(x))`` is ``x`` for
    images constant on ``f x f`` blocks, bit for bit when ``f`` is a power of
    two and ``C == 3`` (with ``C > 3`` the extra latent channels come back as
    zeros). Dtype and device are kept.

    Every call is recorded in :attr:`calls` (:class:`Call` values); the
    inputs themselves, unchanged objects, in :attr:`encoded` and :attr:`decoded`.
    """

    def __init__(self, vae_scale_factor: int = 2, latent_channels: int = 3) -> None:
        if vae_scale_factor < 1 or latent_channels < 1:
            raise ValueError("vae_scale_factor and latent_channels must be positive")
        self.vae_scale_factor = int(vae_scale_factor)
        self.latent_channels = int(latent_channels)
        self.calls: list[Call] = []
        self.encoded: list[torch.Tensor] = []
        self.decoded: list[torch.Tensor] = []

    def calls_to(self, name: str) -> list[dict]:
        """What each recorded call of method ``name`` got, in order."""
        return [c.args for c in self.calls if c.name == name]

    def encode_images(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        f = self.vae_scale_factor
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2] % f or images.shape[-1] % f:
            raise ValueError(f"encode_images takes images (N, 3, H, W) with H and W multiples of {f}, "
                             f"got {tuple(images.shape)}")
        self.calls.append(Call("encode_images", {"shape": tuple(images.shape), "generator": generator}))
        self.encoded.append(images)
        pooled = _average_pool(images, f)
        c = self.latent_channels
        if c <= 3:
            return pooled[:, :c]
        zeros = pooled.new_zeros((pooled.shape[0], c - 3, *pooled.shape[2:]))
        return torch.cat([pooled, zeros], dim=1)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 4:
            raise ValueError(f"decode_latents takes latents (N, C, h, w), got {tuple(latents.shape)}")
        self.calls.append(Call("decode_latents", {"shape": tuple(latents.shape)}))
        self.decoded.append(latents)
        rgb = latents[:, :3]
        if rgb.shape[1] < 3:
            rgb = torch.cat([rgb, rgb.new_zeros((rgb.shape[0], 3 - rgb.shape[1], *rgb.shape[2:]))], dim=1)
        f = self.vae_scale_factor
        return rgb.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)


class _Tokenizer:
    """The one tokenizer attribute the sampler reads."""

    def __init__(self, model_max_length: int) -> None:
        self.model_max_length = model_max_length


class FakeAdapter(FakeCodec):
    """A model adapter without a model: what :class:`~accdiffusion.Sampler` and
    the view executor call on :class:`~accdiffusion.ModelAdapter`, with
    documented arithmetic in place of the networks, every call recorded in
    :attr:`calls` (``predict``, ``encode_prompts``, ``encode_negative``,
    ``control_residuals``, ``encode_images``, ``decode_latents``).

    * Text: words are whitespace-separated (one token each, plus BOS and EOS
      in :meth:`prompt_token_count`); :meth:`encode_prompts` gives each prompt
      ``p`` the row ``embeds = [[0.01 * words(p), 0.001 * len(p)]]`` (``(P,
      1, 2)``; with ``pooled=True`` also ``pooled = embeds[:, 0]``).
      :meth:`encode_negative` is the row of the negative prompt.
    * :meth:`predict`: ``latents * (0.5 + e) + 0.001 * top`` per row, ``e`` the
      row's ``embeds[:, 0, 0]`` and ``top`` its position's first coordinate in
      image pixels (``positions[:, 0] * vae_scale_factor``; 0 without
      positions), so a row or position mixed up in batching changes the
      answer; ControlNet residuals given to it are recorded, not used.
      ``output=fn(latents, timestep, cond, positions)`` replaces the formula.
      ``guidance`` (default ``"cfg"``) is the guidance mode it declares; with
      ``"embedded"`` the ``guidance=`` rows it gets are recorded.
    * :meth:`control_residuals`: one down residual and the mid residual, both
      ``full((N, 1, 1, 1), scale)``.
    * The codec is :class:`FakeCodec`'s (``latent_channels`` default 4).
    * ``pipeline.scheduler``: ``scheduler`` or, on first use, a diffusers
      ``EulerDiscreteScheduler`` configured as the tiny test models' (diffusers
      is imported then, not before). ``denoiser`` is ``None``: a run whose
      decomposer needs attention maps needs a real model.

    ``native_size`` is ``latent_size * vae_scale_factor`` px (32 by default,
    like the tiny test models).
    """

    family = "fake"

    def __init__(self, *, latent_size: int = 16, vae_scale_factor: int = 2, latent_channels: int = 4,
                 scheduler: Any = None, output: Optional[Callable[..., torch.Tensor]] = None,
                 pooled: bool = False, model_max_length: int = 77, guidance: str = "cfg") -> None:
        super().__init__(vae_scale_factor, latent_channels)
        self.guidance = guidance
        self.patch_size = 1
        self.native_size = int(latent_size) * self.vae_scale_factor
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.denoiser = None
        self.vae = None
        self.tokenizer = _Tokenizer(model_max_length)
        self.output = output
        self.pooled = pooled
        self._scheduler = scheduler
        self._pipeline: Optional[types.SimpleNamespace] = None

    @property
    def pipeline(self) -> types.SimpleNamespace:
        """A stand-in pipeline holding only ``scheduler``."""
        if self._pipeline is None:
            scheduler = self._scheduler
            if scheduler is None:
                from diffusers import EulerDiscreteScheduler

                scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                                   beta_schedule="scaled_linear", steps_offset=1,
                                                   timestep_spacing="leading")
            self._pipeline = types.SimpleNamespace(scheduler=scheduler)
        return self._pipeline

    @property
    def max_prompt_tokens(self) -> int:
        return int(self.tokenizer.model_max_length)

    def attention_capture(self, factor: int) -> Any:
        raise RuntimeError("FakeAdapter has no model to record attention from: use a decomposer that does not "
                           "need attention maps, or a real model")

    # -- text --------------------------------------------------------------------------

    def word_tokens(self, prompt: str) -> tuple[str, ...]:
        """The prompt's words, cut to the text window (``model_max_length - 2``)."""
        return tuple(prompt.split())[: self.tokenizer.model_max_length - 2]

    def word_groups(self, prompt: str) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
        """Every word is one token: ``(words, ((0,), (1,), ...))``."""
        words = self.word_tokens(prompt)
        return words, tuple((k,) for k in range(len(words)))

    def prompt_token_count(self, prompt: str) -> int:
        """Words plus BOS and EOS."""
        return len(prompt.split()) + 2

    def _rows(self, prompts: Sequence[str]) -> Conditioning:
        embeds = torch.tensor([[[0.01 * len(p.split()), 0.001 * len(p)]] for p in prompts], dtype=torch.float32)
        embeds = embeds.reshape(len(prompts), 1, 2)
        return Conditioning(embeds, embeds[:, 0].clone() if self.pooled else None)

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        self.calls.append(Call("encode_prompts", {"prompts": tuple(prompts)}))
        return self._rows(prompts)

    def encode_negative(self, prompt: str, negative_prompt: str) -> Conditioning:
        self.calls.append(Call("encode_negative", {"prompt": prompt, "negative_prompt": negative_prompt}))
        return self._rows([negative_prompt])

    # -- denoising ---------------------------------------------------------------------

    def predict(self, latents: torch.Tensor, timestep: Any, cond: Conditioning,
                positions: Optional[torch.Tensor], target_size: tuple[int, int], **extra: Any) -> torch.Tensor:
        guidance = extra.pop("guidance", None)
        self.calls.append(Call("predict", {
            "views": int(latents.shape[0]), "shape": tuple(latents.shape), "timestep": timestep,
            "positions": None if positions is None else positions.clone(),
            "target_size": tuple(target_size),
            "residuals": tuple(sorted(k for k, v in extra.items() if v is not None)),
            "guidance": None if guidance is None else tuple(float(g) for g in guidance),
        }))
        if len(cond) != latents.shape[0]:
            raise ValueError(f"predict got {latents.shape[0]} latents and {len(cond)} conditioning rows")
        if self.output is not None:
            return self.output(latents, timestep, cond, positions)
        shape = (-1,) + (1,) * (latents.dim() - 1)
        e = cond.embeds[:, 0, 0].to(latents).view(shape)
        top = (torch.zeros(latents.shape[0]) if positions is None
               else (positions[:, 0] * self.vae_scale_factor).float())
        return latents * (0.5 + e) + 0.001 * top.to(latents).view(shape)

    def control_residuals(self, controlnet: Any, latents: torch.Tensor, timestep: Any, cond: Conditioning,
                          positions: Optional[torch.Tensor], target_size: tuple[int, int],
                          images: torch.Tensor, scale: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        self.calls.append(Call("control_residuals", {"views": int(latents.shape[0]), "images": tuple(images.shape),
                                                     "scale": float(scale), "model": controlnet}))
        value = torch.full((latents.shape[0], 1, 1, 1), float(scale))
        return [value.clone()], value.clone()


# -- options ---------------------------------------------------------------------------


def option_text(value: Any) -> str:
    """``value`` as the command line writes it: ``true``/``false``, ``none``, else ``str``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bad_option_values(spec: OptionSpec) -> list[Any]:
    """Values that ``spec`` must refuse: ``None`` unless optional, a word that
    is not of the type, values just outside the bounds, a value outside the
    choices, a non-finite number, an empty string."""
    bad: list[Any] = []
    if not spec.optional:
        bad.append(None)
    if spec.type is bool:
        bad += ["maybe", 2]
    elif spec.type is int:
        bad += ["two", 1.5]
    elif spec.type is float:
        bad += ["half", float("nan"), float("inf")]
    else:
        bad += ["", "   "]
    if spec.type in (int, float):
        cast = spec.type
        if spec.minimum is not None:
            bad.append(cast(spec.minimum) if spec.min_exclusive else cast(spec.minimum - 1))
        if spec.maximum is not None:
            bad.append(cast(spec.maximum) if spec.max_exclusive else cast(spec.maximum + 1))
        if spec.choices is not None and spec.choices:
            bad.append(cast(max(spec.choices) + 1))
    elif spec.type is str and spec.choices is not None:
        bad.append("kit-not-a-choice")
    return bad


def _registration(host: PluginHost, stage: str, name: str) -> Any:
    try:
        return host.registry.get(stage, name)
    except PluginError as exc:
        raise AssertionError(f"no {stage} {name!r} in the host: {exc}") from None


def _settings(prompt: str, plugin_options: Mapping[str, Any]) -> Settings:
    return Settings(prompt=prompt, plugin_options=dict(plugin_options))


def _build(host: PluginHost, stage: str, name: str, settings: Settings) -> Any:
    try:
        return host.create(stage, name, settings)
    except PluginError as exc:
        raise AssertionError(f"the host could not build the {stage} {name!r}: {exc}") from None


def check_registration(plugin: Any, stage: str, name: str) -> None:
    """``plugin`` registers a ``stage`` called ``name`` (a
    :class:`~accdiffusion.StagePlugin` through one of its entries): a host
    with the plugin builds, and its registration of the name is the plugin's."""
    _expect(stage in STAGES, f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    _expect(isinstance(name, str) and name, "set `name` to the name the plugin registers")
    _expect(plugin is not None, "set `plugin` to the plugin object (a StagePlugin: accdiffusion_x.plugin.plugin)")
    if isinstance(plugin, StagePlugin):
        lines = [e for e in plugin.entries if e.stage == stage]
        _expect(any(e.name == name for e in lines),
                f"{plugin!r} has no StageEntry for the {stage} {name!r}; its {stage} entries: "
                f"{', '.join(e.name for e in lines) or '(none)'}")
    try:
        host = host_with(plugin)
    except PluginError as exc:
        raise AssertionError(f"a host with the plugin cannot be built: {exc}") from None
    reg = _registration(host, stage, name)
    _expect(reg.stage == stage, f"the registration of {name!r} is for the stage {reg.stage!r}, not {stage!r}")
    _expect(reg.plugin == host.pm.get_name(plugin),
            f"the {stage} {name!r} was registered by {reg.source()}, not by the plugin under test")


def check_built(host: PluginHost, stage: str, name: str, settings: Settings) -> Any:
    """The host builds the ``stage`` ``name`` from ``settings``: an object of
    the stage's protocol that carries the values of its declared options
    (those the run record reads through :func:`accdiffusion.options.stage_values`),
    the ones ``settings`` sets included. Returns the object."""
    obj = _build(host, stage, name, settings)
    protocol = PROTOCOLS[stage]
    _expect(isinstance(obj, protocol), f"the {stage} {name!r} built by the host is a {type(obj).__name__}, "
                                       f"not a {protocol.__name__}")
    reg = _registration(host, stage, name)
    declared = reg.declared
    if declared:
        values = stage_values(obj)
        _expect(set(values) == {o.name for o in declared},
                f"the {stage} {name!r} built by the host records the options {sorted(values)}, but declares "
                f"{[o.name for o in declared]}: keep the options object as the stage object (an attrs class "
                "with option() fields) or as its `options` attribute")
        given = host.options_for(stage, name, settings)
        for field, value in given.items():
            _expect(values[field] == value,
                    f"option {name}.{field}={value!r} was given, but the object has {field}={values[field]!r}")
    return obj


def check_option_defaults(host: PluginHost, stage: str, name: str, prompt: str = "a cat") -> None:
    """Every declared option's default is allowed by its own declaration, its
    command-line text parses back to it, and the object built without options
    (and with each default given as text) carries the defaults."""
    reg = _registration(host, stage, name)
    plain = _build(host, stage, name, _settings(prompt, {}))
    values = stage_values(plain)
    for opt in reg.declared:
        key = f"{name}.{opt.name}"
        _expect(opt.spec.check(opt.default) is None,
                f"option {key}: its default {opt.default!r} is not allowed by its own declaration "
                f"({opt.spec.allowed()})")
        text = option_text(opt.default)
        try:
            parsed = opt.spec.parse(text)
        except ValueError:
            raise AssertionError(f"option {key}: the text {text!r} of its default does not parse") from None
        _expect(parsed == opt.default, f"option {key}: the text {text!r} of its default parses to {parsed!r}")
        if values:
            _expect(values.get(opt.name) == opt.default,
                    f"option {key}: built without options the object has {values.get(opt.name)!r}, "
                    f"not the default {opt.default!r}")
        try:
            given = stage_values(host.create(stage, name, _settings(prompt, {key: text})))
        except (SettingsError, PluginError) as exc:
            raise AssertionError(f"option {key}={text!r} (its default, as text) is refused: {exc}") from None
        if given:
            _expect(given.get(opt.name) == opt.default,
                    f"option {key}={text!r} gives {given.get(opt.name)!r}, not the default {opt.default!r}")


def check_refused_option_values(host: PluginHost, stage: str, name: str,
                                extra: Optional[Mapping[str, Sequence[Any]]] = None, prompt: str = "a cat") -> None:
    """Each declared option given a value its declaration does not allow
    (:func:`bad_option_values`) makes ``host.create`` and
    ``host.check_options`` raise :class:`~accdiffusion.SettingsError` whose
    message names ``NAME.FIELD`` and the value; so does each of
    ``extra[field]`` with ``host.create`` (values the stage's own validation
    refuses when it is built, such as a missing file)."""
    reg = _registration(host, stage, name)
    declared = {o.name: o for o in reg.declared}
    for field in (extra or {}):
        _expect(field in declared, f"bad_values names {field!r}, which the {stage} {name!r} does not declare; "
                                   f"its options: {', '.join(declared) or '(none)'}")
    for opt in reg.declared:
        key = f"{name}.{opt.name}"
        derived = bad_option_values(opt.spec)
        for bad in [*derived, *(extra or {}).get(opt.name, ())]:
            settings = _settings(prompt, {key: bad})
            calls = [("create", lambda s=settings: host.create(stage, name, s))]
            if any(bad is d for d in derived):
                calls.append(("check_options", lambda s=settings: host.check_options(s, {stage: name})))
            for what, call in calls:
                try:
                    call()
                except SettingsError as exc:
                    message = str(exc)
                    _expect(key in message, f"option {key}={bad!r}: host.{what} refused it, but its message "
                                            f"does not name {key!r}: {message}")
                    _expect(repr(bad) in message or str(bad) in message,
                            f"option {key}={bad!r}: host.{what} refused it, but its message does not show the "
                            f"value: {message}")
                except Exception as exc:  # noqa: BLE001 - any other error is a broken contract
                    raise AssertionError(f"option {key}={bad!r}: host.{what} raised {type(exc).__name__} ({exc}), "
                                         "not SettingsError") from None
                else:
                    raise AssertionError(f"option {key}={bad!r} is not allowed ({opt.spec.allowed()}), but "
                                         f"host.{what} accepted it")


#: The name of the stand-in stage :func:`stand_in_plugin` registers for every stage.
STAND_IN = "kit_stand_in"


@attrs.frozen
class _StandIn:
    """A minimal object of every stage, with one option ``flag``."""

    needs_attention = False
    fixed_windows = False

    flag: bool = option(False, help="does nothing")

    def layout(self, height: int, width: int, window: int, stride: int,
               generator: Optional[torch.Generator]) -> WindowLayout:
        return window_layout(height, width, window, stride)

    def decompose(self, request: DecomposeRequest) -> PatchPrompts:
        return PatchPrompts((request.prompt,) * len(request.layout))

    def word_masks(self, attention: AttentionMaps) -> None:
        return None

    def predict(self, request: GuidanceRequest) -> torch.Tensor:
        return request.denoise(ViewBatchRequest(request.latents, request.guidance_scale))

    def views(self, request: GuidanceRequest) -> None:
        return None

    def upscale(self, latents: torch.Tensor, size: tuple[int, int], codec: Any) -> torch.Tensor:
        return F.interpolate(latents, size=tuple(size), mode="nearest")

    def plan(self, request: ScheduleRequest) -> tuple[PhaseSchedule, ...]:
        return tuple(PhaseSchedule(request.steps) for _ in request.scales)

    def prepare(self, adapter: Any) -> None:
        return None

    def control(self, request: StructureRequest) -> None:
        return None

    def pictures(self) -> tuple:
        return ()


def stand_in_plugin(stage: str) -> StagePlugin:
    """A plugin registering a minimal ``stage`` called :data:`STAND_IN` with one
    option, ``flag``: another plugin of the stage to select instead of the one under test."""
    return StagePlugin([StageEntry(stage, STAND_IN, _StandIn, "a stand-in of the test kit")])


def check_options_need_selection(plugin: Any, stage: str, name: str, prompt: str = "a cat") -> None:
    """Plugin options apply to the selected plugin only: with another plugin of
    the stage selected, ``host.check_options`` refuses each option of
    ``name`` (naming it and saying it is not selected) and accepts it with
    ``name`` selected; with ``name`` selected, the other plugin's option is refused."""
    host = host_with(plugin, stand_in_plugin(stage))
    reg = _registration(host, stage, name)
    other = f"{STAND_IN}.flag"
    try:
        host.check_options(_settings(prompt, {other: "true"}), {stage: name})
    except SettingsError as exc:
        _expect(other in str(exc) and "not selected" in str(exc),
                f"option {other} for another {stage} was refused with {exc}, which does not say so")
    else:
        raise AssertionError(f"with the {stage} {name!r} selected, option {other} of another plugin was accepted")
    for opt in reg.declared:
        key = f"{name}.{opt.name}"
        settings = _settings(prompt, {key: option_text(opt.default)})
        try:
            host.check_options(settings, {stage: name})
        except SettingsError as exc:
            raise AssertionError(f"option {key} (its default) is refused with the {stage} {name!r} selected: "
                                 f"{exc}") from None
        try:
            host.check_options(settings, {stage: STAND_IN})
        except SettingsError as exc:
            _expect(key in str(exc) and "not selected" in str(exc),
                    f"option {key} with another {stage} selected was refused with {exc}, which does not say so")
        else:
            raise AssertionError(f"option {key} was accepted while another {stage} is selected")


def check_aliases(host: PluginHost, stage: str, name: str, prompt: str = "a cat") -> None:
    """Every declared alias of an option sets that option when ``name`` is
    selected (``host.options_for``), and a value the option refuses is
    refused through the alias too, naming ``NAME.FIELD``."""
    reg = _registration(host, stage, name)
    for opt in reg.declared:
        key = f"{name}.{opt.name}"
        for alias in opt.spec.aliases:
            settings = _settings(prompt, {alias: option_text(opt.default)})
            try:
                values = host.options_for(stage, name, settings)
                host.check_options(settings, {stage: name})
            except SettingsError as exc:
                raise AssertionError(f"alias {alias!r} of option {key} with its default is refused: {exc}") from None
            _expect(values.get(opt.name) == opt.default,
                    f"alias {alias!r}={option_text(opt.default)!r} sets {values}, not {opt.name}={opt.default!r}")
            bad = bad_option_values(opt.spec)[-1]
            try:
                host.options_for(stage, name, _settings(prompt, {alias: bad}))
            except SettingsError as exc:
                _expect(key in str(exc), f"alias {alias!r}={bad!r} was refused with a message that does not "
                                         f"name {key}: {exc}")
            else:
                raise AssertionError(f"alias {alias!r}={bad!r} is not allowed ({opt.spec.allowed()}), but was "
                                     "accepted")


def check_entry_point(plugin: Any, entry_point: str, stage: str, name: str) -> None:
    """The installed entry point ``entry_point`` of the ``accdiffusion`` group
    loads ``plugin`` itself (``<package>.plugin:plugin``, not the module), and
    a host loading only that entry point has the ``stage`` ``name`` from it."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == entry_point]
    _expect(len(found) == 1, f"{len(found)} installed entry points named {entry_point!r} in the "
                             f"{ENTRY_POINT_GROUP!r} group (is the distribution installed?)")
    (ep,) = found
    loaded = ep.load()
    _expect(loaded is plugin, f"the entry point {entry_point} = {ep.value!r} loads {loaded!r}, not the plugin "
                              f"object under test; declare {entry_point} = \"<package>.plugin:plugin\"")
    with _environment(ALLOW_ENV, entry_point):
        host = PluginHost()
    reg = _registration(host, stage, name)
    _expect(reg.plugin == entry_point, f"the {stage} {name!r} comes from {reg.source()}, not from the entry "
                                       f"point {entry_point!r}")


# -- tilers ----------------------------------------------------------------------------


def check_layout(layout: Any, height: int, width: int, window: int, where: str = "") -> None:
    """``layout`` is a :class:`~accdiffusion.WindowLayout` of the ``height x
    width`` canvas: windows of ``min(window, side)`` inside the padded canvas,
    covering every pixel of the canvas."""
    at = f" ({where})" if where else ""
    _expect(isinstance(layout, WindowLayout), f"layout{at} is a {type(layout).__name__}, not a WindowLayout")
    _expect((layout.canvas_height, layout.canvas_width) == (height, width),
            f"layout{at} is for a {layout.canvas_height}x{layout.canvas_width} canvas, not {height}x{width}")
    _expect(isinstance(layout.pad, int) and layout.pad >= 0, f"layout{at} has pad={layout.pad!r}")
    _expect(len(layout.windows) >= 1, f"layout{at} has no windows")
    size = (min(window, height), min(window, width))
    ph, pw = height + 2 * layout.pad, width + 2 * layout.pad
    for k, w in enumerate(layout.windows):
        _expect(isinstance(w, Window), f"window {k}{at} is a {type(w).__name__}, not a Window")
        _expect((w.height, w.width) == size, f"window {k}{at} is {w.height}x{w.width}, not {size[0]}x{size[1]} "
                                             f"(window {window} clipped to the canvas)")
        _expect(0 <= w.top and w.bottom <= ph and 0 <= w.left and w.right <= pw,
                f"window {k}{at} {w} leaves the {ph}x{pw} padded canvas")
    uncovered = torch.nonzero(layout.coverage() == 0)
    _expect(len(uncovered) == 0, f"layout{at} leaves {len(uncovered)} canvas pixels uncovered, the first at "
                                 f"(row, col) = {tuple(uncovered[0].tolist()) if len(uncovered) else None}")


def check_tiler_coverage(tiler: Any, canvases: Sequence[tuple[int, int]], window: int, strides: Sequence[int],
                         seeds: Sequence[int] = (0, 1)) -> None:
    """For every canvas and stride, without a generator and with one per
    seed, the layout passes :func:`check_layout`."""
    for height, width in canvases:
        for stride in strides:
            for seed in (None, *seeds):
                gen = None if seed is None else generator(seed)
                layout = tiler.layout(height, width, window, stride, gen)
                check_layout(layout, height, width, window,
                             f"canvas {height}x{width}, window {window}, stride {stride}, "
                             + ("no generator" if seed is None else f"seed {seed}"))


def check_tiler_reproducible(tiler: Any, canvases: Sequence[tuple[int, int]], window: int, stride: int,
                             seeds: Sequence[int] = (0, 1)) -> None:
    """The same seed gives the same layout; no generator gives one layout."""
    for height, width in canvases:
        _expect(tiler.layout(height, width, window, stride, None) == tiler.layout(height, width, window, stride, None),
                f"two layouts of {height}x{width} without a generator differ")
        for seed in seeds:
            first = tiler.layout(height, width, window, stride, generator(seed))
            _expect(first == tiler.layout(height, width, window, stride, generator(seed)),
                    f"two layouts of {height}x{width} from seed {seed} differ")


def check_tiler_refuses_bad_input(tiler: Any, window: int) -> None:
    """A stride outside ``[1, window]``, a non-positive canvas side or window
    raise ``ValueError`` (with and without a generator)."""
    cases = [((4 * window, 4 * window, window, 0), "stride 0"),
             ((4 * window, 4 * window, window, window + 1), f"stride {window + 1} > window {window}"),
             ((4 * window, 4 * window, window, -1), "stride -1"),
             ((0, 4 * window, window, 1), "canvas height 0"),
             ((4 * window, 0, window, 1), "canvas width 0"),
             ((4 * window, 4 * window, 0, 1), "window 0")]
    for args, what in cases:
        for gen in (None, generator(0)):
            try:
                tiler.layout(*args, gen)
            except ValueError:
                continue
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(f"layout{args} ({what}) raised {type(exc).__name__}, not ValueError") from None
            raise AssertionError(f"layout{args} ({what}) did not raise ValueError")


# -- prompt decomposers ------------------------------------------------------------------


def check_decomposer(decomposer: Any, request: DecomposeRequest, where: str = "") -> PatchPrompts:
    """Exactly one prompt (a string) per window of ``request.layout``; ``words``
    empty or one tuple of strings per window; with attention maps, only words
    of the prompt. Returns the answer."""
    at = f" ({where})" if where else ""
    result = decomposer.decompose(request)
    n = len(request.layout)
    _expect(isinstance(result, PatchPrompts), f"decompose{at} returned a {type(result).__name__}, not PatchPrompts")
    _expect(len(result.prompts) == n, f"decompose{at} returned {len(result.prompts)} prompts for {n} windows")
    _expect(all(isinstance(p, str) for p in result.prompts), f"decompose{at} returned prompts that are not strings: "
                                                              f"{result.prompts!r}")
    _expect(len(result.words) in (0, n), f"decompose{at} returned {len(result.words)} word tuples for {n} windows")
    _expect(all(isinstance(w, tuple) and all(isinstance(x, str) for x in w) for w in result.words),
            f"decompose{at} returned words that are not tuples of strings: {result.words!r}")
    if request.attention is not None:
        allowed = set(request.prompt.split()) | set(request.attention.words)
        for k, prompt in enumerate(result.prompts):
            foreign = [w for w in prompt.split() if w not in allowed]
            _expect(not foreign, f"decompose{at}: window {k}'s prompt {prompt!r} has words that are not in the "
                                 f"prompt {request.prompt!r}: {foreign}")
        for k, words in enumerate(result.words):
            foreign = [w for w in words if w not in allowed]
            _expect(not foreign, f"decompose{at}: window {k} keeps words that are not in the prompt: {foreign}")
    return result


def check_word_masks(decomposer: Any, attention: AttentionMaps) -> None:
    """``word_masks(attention)`` is ``None`` or a bool ``(n_words, h_a, w_a)`` tensor."""
    masks = decomposer.word_masks(attention)
    if masks is None:
        return
    expected = (len(attention.words), *attention.maps.shape[:2])
    _expect(isinstance(masks, torch.Tensor), f"word_masks returned a {type(masks).__name__}, not a tensor or None")
    _expect(masks.dtype == torch.bool, f"word_masks returned {masks.dtype} masks, not bool")
    _expect(tuple(masks.shape) == tuple(expected),
            f"word_masks returned shape {tuple(masks.shape)} for {len(attention.words)} words on "
            f"{tuple(attention.maps.shape[:2])} maps, not {tuple(expected)}")


def check_decomposer_refuses_mismatched_maps(decomposer: Any, request: DecomposeRequest) -> None:
    """A decomposer that reads attention maps raises ``ValueError`` when the
    maps are one more or one fewer than the words (``request.attention`` must
    hold at least one word)."""
    attention = request.attention
    _expect(attention is not None and len(attention.words) >= 1, "the request needs attention maps of a word or more")
    maps = attention.maps
    for label, bad in (("one map more", torch.cat([maps, maps[..., :1]], dim=-1)), ("one map fewer", maps[..., :-1])):
        broken = attrs.evolve(request, attention=AttentionMaps(bad, attention.words, attention.latent_per_map))
        try:
            decomposer.decompose(broken)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"decompose with {label} than words raised {type(exc).__name__}, "
                                 "not ValueError") from None
        raise AssertionError(f"decompose with {label} ({bad.shape[-1]} maps for {len(attention.words)} words) "
                             "did not raise ValueError")


# -- global guidances ------------------------------------------------------------------


def check_global_guidance(guidance: Any, latents: torch.Tensor, scale: int, seed: int = 0) -> None:
    """``predict`` (with a :class:`RecordingDenoise`) returns a finite tensor of
    the canvas's shape; ``views`` is ``None`` or :class:`~accdiffusion.types.GlobalViews`
    whose assembled outputs have the canvas's shape and equal ``predict``'s
    answer, drawing the same from the generator; the same seed gives the same answer."""
    where = f"canvas {tuple(latents.shape)}, scale {scale}"
    gen = generator(seed)
    out = guidance.predict(guidance_request(latents, scale, RecordingDenoise(), gen))
    _expect(isinstance(out, torch.Tensor), f"predict ({where}) returned a {type(out).__name__}, not a tensor")
    _expect(tuple(out.shape) == tuple(latents.shape), f"predict ({where}) returned shape {tuple(out.shape)}")
    _expect(bool(torch.isfinite(out).all()), f"predict ({where}) returned non-finite values")
    again = guidance.predict(guidance_request(latents, scale, RecordingDenoise(), generator(seed)))
    _expect(torch.equal(out, again), f"predict ({where}) gives another answer from the same seed {seed}")
    gen_views = generator(seed)
    views = guidance.views(guidance_request(latents, scale, RecordingDenoise(), gen_views))
    if views is None:
        return
    _expect(isinstance(views, GlobalViews), f"views ({where}) returned a {type(views).__name__}, not GlobalViews "
                                            "or None")
    _expect(isinstance(views.batch, ViewBatchRequest) and views.batch.latents.dim() == 4,
            f"views ({where}): batch is not a ViewBatchRequest of (N, C, h, w) latents")
    assembled = views.assemble(RecordingDenoise()(views.batch))
    _expect(tuple(assembled.shape) == tuple(latents.shape),
            f"views ({where}) assemble to shape {tuple(assembled.shape)}, not the canvas's {tuple(latents.shape)}")
    _expect(torch.allclose(assembled, out, rtol=1e-5, atol=1e-6),
            f"views ({where}) assembled differ from predict's answer by up to "
            f"{(assembled - out).abs().max().item():.3g}")
    _expect(torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=gen_views)),
            f"views ({where}) drew another amount from the generator than predict")


def check_global_guidance_refuses_batched_latents(guidance: Any, latents: torch.Tensor, scale: int) -> None:
    """Latents that are not one canvas ``(1, C, H, W)`` raise ``ValueError``."""
    for bad in (torch.cat([latents, latents]), latents[0]):
        try:
            guidance.predict(guidance_request(bad, scale, RecordingDenoise(), generator(0)))
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"predict with latents {tuple(bad.shape)} raised {type(exc).__name__}, "
                                 "not ValueError") from None
        raise AssertionError(f"predict with latents {tuple(bad.shape)} (not (1, C, H, W)) did not raise ValueError")


# -- upscalers -------------------------------------------------------------------------


def check_upscaler(upscaler: Any, latents: torch.Tensor, sizes: Sequence[tuple[int, int]],
                   codec: Optional[Any] = None) -> None:
    """For each ``(h, w)`` in ``sizes``, ``upscale`` returns finite latents of
    shape ``(1, C, h, w)``, ``C`` that of ``latents``."""
    codec = codec if codec is not None else FakeCodec(latent_channels=int(latents.shape[1]))
    for size in sizes:
        out = upscaler.upscale(latents, tuple(size), codec)
        expected = (latents.shape[0], latents.shape[1], *size)
        _expect(isinstance(out, torch.Tensor), f"upscale to {size} returned a {type(out).__name__}, not a tensor")
        _expect(tuple(out.shape) == tuple(expected), f"upscale of {tuple(latents.shape)} to {tuple(size)} returned "
                                                     f"shape {tuple(out.shape)}, not {tuple(expected)}")
        _expect(bool(torch.isfinite(out).all()), f"upscale to {size} returned non-finite values")


# -- schedules -------------------------------------------------------------------------


def check_schedule(schedule: Any, request: ScheduleRequest) -> tuple[PhaseSchedule, ...]:
    """One :class:`~accdiffusion.types.PhaseSchedule` per upscaling phase, each
    with ``steps >= 1`` and ``0 <= start < steps`` (the sampler's own check,
    :func:`accdiffusion.schedules.validate_schedule`), the same answer twice."""
    from accdiffusion.schedules import validate_schedule

    answer = schedule.plan(request)
    where = f"scales {list(request.scales)}, steps {request.steps}"
    try:
        phases = validate_schedule(answer, request, "the schedule")
    except PluginError as exc:
        raise AssertionError(f"plan ({where}): {exc}") from None
    _expect(tuple(schedule.plan(request)) == phases, f"plan ({where}) answers differently the second time")
    return phases


# -- structure guidances -----------------------------------------------------------------


def check_structure_guidance(guidance: Any, request: StructureRequest) -> None:
    """``pictures()`` is a tuple of ``(scale, image)`` pairs before and after
    ``control(request)``; ``control`` is ``None`` or
    :class:`~accdiffusion.types.ControlViews` with one image in ``[0, 1]`` per
    window, each the window's size in image pixels, and ``0 <= start <= end <= 1``."""
    before = guidance.pictures()
    _expect(isinstance(before, tuple), f"pictures() returned a {type(before).__name__}, not a tuple")
    views = guidance.control(request)
    if views is not None:
        _expect(isinstance(views, ControlViews), f"control returned a {type(views).__name__}, not ControlViews "
                                                 "or None")
        v = request.vae_scale_factor
        sizes = {(w.height * v, w.width * v) for w in request.layout.windows}
        _expect(len(sizes) == 1, "the request's windows differ in size")
        (h, w), = sizes
        expected = (len(request.layout), 3, h, w)
        _expect(tuple(views.images.shape) == expected,
                f"control returned images of shape {tuple(views.images.shape)}, not {expected} (one per window, "
                "the window's size in image pixels)")
        _expect(views.images.is_floating_point() and bool((views.images >= 0).all() and (views.images <= 1).all()),
                "control images must be floats in [0, 1]")
        _expect(0.0 <= views.start <= views.end <= 1.0, f"control start={views.start}, end={views.end}: "
                                                        "need 0 <= start <= end <= 1")
    after = guidance.pictures()
    _expect(isinstance(after, tuple), f"pictures() returned a {type(after).__name__}, not a tuple")
    for item in after:
        _expect(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int),
                f"pictures() holds {item!r}, not a (scale, image) pair")


# -- the contract classes -----------------------------------------------------------------


class StageContract:
    """Tests every stage plugin must pass; inherited through the stage's contract class.

    Set on the subclass: ``plugin`` (the plugin object the entry point names;
    ``accdiffusion.builtins.BUILTINS`` for the core's own stages), ``name``
    (the registered name), optionally ``entry_point`` (the entry-point name,
    checked against the installed distribution; unset, that test is
    skipped), ``options`` (``{FIELD: value}``, the plugin options of the
    object under test), ``bad_values`` (``{FIELD: [values]}`` refused beside
    the ones derived from each declaration) and ``prompt``. Override
    :meth:`make` to build the object under test another way.
    """

    stage: ClassVar[str] = ""
    plugin: ClassVar[Any] = None
    name: ClassVar[str] = ""
    entry_point: ClassVar[Optional[str]] = None
    options: ClassVar[Mapping[str, Any]] = {}
    bad_values: ClassVar[Mapping[str, Sequence[Any]]] = {}
    prompt: ClassVar[str] = "a cat and a dog on a sofa"

    # -- building ------------------------------------------------------------------------

    def host(self) -> PluginHost:
        """A host with only :attr:`plugin` (and the core's stages)."""
        return host_with(self.plugin)

    def plugin_options(self) -> dict[str, Any]:
        """:attr:`options` as ``Settings.plugin_options`` (``NAME.FIELD`` keys)."""
        return {key if "." in key else f"{self.name}.{key}": value for key, value in self.options.items()}

    def settings(self) -> Settings:
        """The settings the object under test is built from."""
        return _settings(self.prompt, self.plugin_options())

    def make(self) -> Any:
        """The object under test: the host's ``create`` from :meth:`settings`."""
        return _build(self.host(), self.stage, self.name, self.settings())

    # -- registration and options -----------------------------------------------------------

    def test_registered_by_the_plugin_under_its_name(self) -> None:
        check_registration(self.plugin, self.stage, self.name)

    def test_built_by_a_host_from_settings(self) -> None:
        check_built(self.host(), self.stage, self.name, self.settings())

    def test_implements_the_stage_protocol(self) -> None:
        obj = self.make()
        protocol = PROTOCOLS[self.stage]
        _expect(isinstance(obj, protocol), f"{type(obj).__name__} does not implement {protocol.__name__}")

    def test_option_defaults_are_allowed(self) -> None:
        check_option_defaults(self.host(), self.stage, self.name, self.prompt)

    def test_bad_option_values_are_refused(self) -> None:
        check_refused_option_values(self.host(), self.stage, self.name, self.bad_values, self.prompt)

    def test_options_apply_only_to_the_selected_plugin(self) -> None:
        check_options_need_selection(self.plugin, self.stage, self.name, self.prompt)

    def test_aliases_set_their_option(self) -> None:
        check_aliases(self.host(), self.stage, self.name, self.prompt)

    def test_installed_entry_point_loads_the_plugin(self) -> None:
        if self.plugin is not None and self.plugin is _builtins():
            with _environment(ALLOW_ENV, ""):
                reg = _registration(PluginHost(), self.stage, self.name)
            _expect(reg.distribution == "accdiffusion-core", f"the {self.stage} {self.name!r} comes from "
                                                             f"{reg.source()}, not from the core")
            return
        if self.entry_point is None:
            pytest.skip("entry_point is not set: set it to the plugin's entry-point name to check the installed "
                        "distribution")
        check_entry_point(self.plugin, self.entry_point, self.stage, self.name)


class TilerContract(StageContract):
    """The :class:`~accdiffusion.Tiler` contract: layouts of ``window`` (16) on
    each of ``canvases`` (square, non-square, smaller than the window, 1x1)
    with each of ``strides`` cover every pixel, without a generator and with
    one of each of ``seeds``; a seed gives one layout; a stride outside
    ``[1, window]`` and non-positive sizes raise ``ValueError``."""

    stage = "tiler"
    window: ClassVar[int] = 16
    strides: ClassVar[tuple[int, ...]] = (1, 5, 8, 16)
    canvases: ClassVar[tuple[tuple[int, int], ...]] = ((16, 16), (24, 40), (40, 24), (33, 70), (10, 12), (7, 5),
                                                       (1, 1), (64, 48))
    seeds: ClassVar[tuple[int, ...]] = (0, 1)

    def test_layouts_cover_every_pixel(self) -> None:
        check_tiler_coverage(self.make(), self.canvases, self.window, self.strides, self.seeds)

    def test_layouts_are_reproducible_from_a_seed(self) -> None:
        check_tiler_reproducible(self.make(), self.canvases, self.window, max(1, self.window // 2), self.seeds)

    def test_refuses_a_stride_outside_the_window(self) -> None:
        check_tiler_refuses_bad_input(self.make(), self.window)


class PromptDecomposerContract(StageContract):
    """The :class:`~accdiffusion.PromptDecomposer` contract: ``needs_attention``
    and ``fixed_windows`` are bools; one prompt per window for layouts on
    ``canvases`` (windows of 32, stride 16, phase ``scale`` 2; a jittered
    layout too) without attention maps, with crafted maps of the prompt's
    words (then only words of the prompt), and for an empty prompt;
    ``word_masks`` is ``None`` or one bool mask per word; a decomposer that
    needs attention refuses maps that do not match the words (``ValueError``).

    Override :meth:`low_res_image` to give the requests a phase-1 image.
    """

    stage = "prompt_decomposer"
    scale: ClassVar[int] = 2
    latent_per_map: ClassVar[int] = 4
    window: ClassVar[int] = 32
    canvases: ClassVar[tuple[tuple[int, int], ...]] = ((64, 64), (32, 80), (32, 32), (96, 64))

    def low_res_image(self) -> Any:
        """The phase-1 image of the requests (``None``: the requests carry none)."""
        return None

    def layouts(self) -> list[WindowLayout]:
        """The layouts of the requests: a grid on each canvas, and a jittered one."""
        grids = [window_layout(h, w, self.window) for h, w in self.canvases]
        return grids + [jittered(grids[0], 2, generator(0))]

    def maps_for(self, layout: WindowLayout, words: Sequence[str], seed: int = 0) -> AttentionMaps:
        """Random float maps of ``words`` at the size that phase 1 had for ``layout``'s canvas."""
        f = self.scale * self.latent_per_map
        h_a, w_a = max(1, layout.canvas_height // f), max(1, layout.canvas_width // f)
        maps = torch.rand((len(words), h_a, w_a), generator=generator(seed))
        return attention_maps(words, maps, self.latent_per_map)

    def requests(self, with_maps: bool) -> list[DecomposeRequest]:
        image = self.low_res_image()
        words = self.prompt.split()
        return [decompose_request(self.prompt, layout, self.scale,
                                  self.maps_for(layout, words, seed) if with_maps else None, image)
                for seed, layout in enumerate(self.layouts())]

    def test_declares_its_flags(self) -> None:
        obj = self.make()
        for flag in ("needs_attention", "fixed_windows"):
            _expect(isinstance(getattr(obj, flag, None), bool), f"{type(obj).__name__}.{flag} must be a bool, is "
                                                                f"{getattr(obj, flag, None)!r}")

    def test_one_prompt_per_window_without_maps(self) -> None:
        obj = self.make()
        for k, request in enumerate(self.requests(with_maps=False)):
            check_decomposer(obj, request, f"layout {k}, no attention maps")

    def test_one_prompt_per_window_with_maps(self) -> None:
        obj = self.make()
        for k, request in enumerate(self.requests(with_maps=True)):
            check_decomposer(obj, request, f"layout {k}, attention maps")
        masks = torch.zeros((3, 8, 8), dtype=torch.bool)
        masks[0, :4, :4] = True
        masks[1, :, 4:] = True
        masks[2, 6:] = True
        words = tuple(self.prompt.split())[:3]
        layout = window_layout(64, 64, self.window)
        request = decompose_request(self.prompt, layout, self.scale,
                                    attention_maps(words, masks[: len(words)], self.latent_per_map),
                                    self.low_res_image())
        check_decomposer(obj, request, "masks of the first words")

    def test_empty_prompt(self) -> None:
        obj = self.make()
        layout = window_layout(64, 64, self.window)
        empty = AttentionMaps(torch.zeros(8, 8, 0), (), self.latent_per_map)
        for attention in (None, empty):
            check_decomposer(obj, decompose_request("", layout, self.scale, attention, self.low_res_image()),
                             "empty prompt")

    def test_word_masks(self) -> None:
        obj = self.make()
        layout = self.layouts()[0]
        check_word_masks(obj, self.maps_for(layout, self.prompt.split()))

    def test_refuses_maps_that_do_not_match_the_words(self) -> None:
        obj = self.make()
        if not obj.needs_attention:
            return  # it does not read the maps
        check_decomposer_refuses_mismatched_maps(obj, self.requests(with_maps=True)[0])


class GlobalGuidanceContract(StageContract):
    """The :class:`~accdiffusion.GlobalGuidance` contract on ``canvases``
    (``(shape, scale)``: square, non-square, sides not multiples of the scale,
    scale 1): ``predict`` returns the canvas shape, ``views`` is ``None`` or
    assembles to it and agrees with ``predict``
    (:func:`check_global_guidance`); latents that are not one canvas raise ``ValueError``."""

    stage = "global_guidance"
    canvases: ClassVar[tuple[tuple[tuple[int, ...], int], ...]] = (
        ((1, 4, 16, 16), 2), ((1, 4, 13, 10), 3), ((1, 4, 24, 16), 2), ((1, 4, 8, 8), 1))
    seed: ClassVar[int] = 0

    def latents(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator(self.seed))

    def test_predict_and_views_give_the_canvas(self) -> None:
        obj = self.make()
        for shape, scale in self.canvases:
            check_global_guidance(obj, self.latents(shape), scale, self.seed)

    def test_refuses_latents_that_are_not_one_canvas(self) -> None:
        shape, scale = self.canvases[0]
        check_global_guidance_refuses_batched_latents(self.make(), self.latents(shape), scale)


class UpscalerContract(StageContract):
    """The :class:`~accdiffusion.Upscaler` contract: latents of ``shape``
    brought to each of ``sizes`` (larger, non-square, odd, equal, smaller) keep
    their batch and channels and have the requested size, through a
    :class:`FakeCodec` (:func:`check_upscaler`)."""

    stage = "upscaler"
    shape: ClassVar[tuple[int, ...]] = (1, 4, 16, 12)
    sizes: ClassVar[tuple[tuple[int, int], ...]] = ((32, 24), (32, 48), (25, 19), (16, 12), (16, 16), (8, 8))

    def codec(self) -> Any:
        return FakeCodec(latent_channels=self.shape[1])

    def test_gives_the_requested_size(self) -> None:
        latents = torch.randn(self.shape, generator=generator(0)) * 0.5
        check_upscaler(self.make(), latents, self.sizes, self.codec())


class ScheduleContract(StageContract):
    """The :class:`~accdiffusion.stages.Schedule` contract: for each of
    ``requests`` (one to three upscaling phases, 1 to 50 steps), one valid
    :class:`~accdiffusion.types.PhaseSchedule` per phase (:func:`check_schedule`)."""

    stage = "schedule"
    requests: ClassVar[tuple[tuple[tuple[int, ...], int], ...]] = (
        ((2,), 1), ((2,), 2), ((2, 3), 3), ((2, 3, 4), 20), ((2,), 50))

    def test_one_phase_schedule_per_phase(self) -> None:
        obj = self.make()
        for scales, steps in self.requests:
            check_schedule(obj, schedule_request(scales, steps))


class StructureGuidanceContract(StageContract):
    """The :class:`~accdiffusion.stages.StructureGuidance` contract: ``prepare``
    with :meth:`adapter` (a :class:`FakeAdapter`) returns or refuses with
    accdiffusion's errors (``SettingsError``, ``ModelError``); ``pictures()``
    is a tuple; ``control`` is ``None`` or one control image per window
    (:func:`check_structure_guidance`), for a grid and a jittered layout."""

    stage = "structure_guidance"

    def adapter(self) -> Any:
        """The adapter given to ``prepare``: a :class:`FakeAdapter` (no UNet);
        override it for a stage that checks its models against a real one."""
        return FakeAdapter()

    def requests(self) -> list[StructureRequest]:
        """Requests of one run: each of another phase (scale), since a stage may
        keep what it made for a phase until the run ends."""
        grid = window_layout(64, 64, 32)
        return [structure_request(grid), structure_request(jittered(grid, 2, generator(0)), scale=3),
                structure_request(window_layout(32, 48, 32), scale=4)]

    def test_prepare_returns_or_refuses_with_a_named_error(self) -> None:
        obj = self.make()
        try:
            obj.prepare(self.adapter())
        except AccDiffusionError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"prepare raised {type(exc).__name__} ({exc}); refuse with SettingsError or "
                                 "ModelError") from None

    def test_pictures_is_a_tuple(self) -> None:
        pictures = self.make().pictures()
        _expect(isinstance(pictures, tuple), f"pictures() returned a {type(pictures).__name__}, not a tuple")

    def test_control_per_window(self) -> None:
        obj = self.make()
        for request in self.requests():
            check_structure_guidance(obj, request)


# -- model families ------------------------------------------------------------------------


def _families(host: PluginHost) -> dict[str, Any]:
    return {f.name: f for f in host.families()}


def check_family_registration(plugin: Any, name: str) -> Any:
    """``plugin`` registers a :class:`~accdiffusion.models.ModelFamily` called
    ``name`` whose adapter is a :class:`~accdiffusion.models.ModelAdapter`
    subclass; returns the family."""
    from accdiffusion.models import ModelAdapter, ModelFamily

    families = _families(host_with(plugin))
    _expect(name in families, f"no model family {name!r} is registered; registered: {', '.join(sorted(families))}")
    family = families[name]
    _expect(isinstance(family, ModelFamily), f"model family {name!r} is a {type(family).__name__}, not a ModelFamily")
    _expect(issubclass(family.adapter, ModelAdapter), f"model family {name!r}: {family.adapter!r} is not a "
                                                       "ModelAdapter subclass")
    _expect(bool(family.pipelines), f"model family {name!r} claims no pipeline class")
    return family


def check_adapter_declarations(adapter: Any) -> None:
    """The adapter's declarations are usable: a guidance mode the executor
    knows, positive patch size, latent channels and VAE factor, and a native
    size that is a whole number of patches of latent pixels."""
    from accdiffusion.models import GUIDANCE_MODES

    name = type(adapter).__name__
    _expect(adapter.guidance in GUIDANCE_MODES, f"{name}.guidance={adapter.guidance!r}; allowed: {GUIDANCE_MODES}")
    for attr in ("patch_size", "latent_channels", "vae_scale_factor", "native_size", "max_prompt_tokens"):
        value = getattr(adapter, attr)
        _expect(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name}.{attr}={value!r}; expected a positive integer")
    step = adapter.vae_scale_factor * adapter.patch_size
    _expect(adapter.native_size % step == 0, f"{name}.native_size={adapter.native_size} is not a multiple of "
                                             f"vae_scale_factor * patch_size = {step}")
    _expect(adapter.denoiser is not None, f"{name}.denoiser is None")


def check_folder_info(family: Any, adapter: Any, folder: Any, host: PluginHost) -> None:
    """A saved folder of the family is claimed from its configs and read as
    the loaded adapter sees it (native size, VAE factor, latent channels)."""
    from accdiffusion.loading import inspect_folder

    info = inspect_folder(str(folder), host.families())
    _expect(info is not None and info["family"] == family.name,
            f"the saved folder {folder} is claimed by {None if info is None else info['family']!r}, "
            f"not {family.name!r}")
    for key in ("native_size", "vae_scale_factor", "latent_channels"):
        _expect(info[key] == getattr(adapter, key), f"folder {key}={info[key]!r} but the loaded adapter has "
                                                    f"{getattr(adapter, key)!r}")
    _expect((Path(folder) / info["denoiser"] / "config.json").is_file(),
            f"folder_info names the denoiser folder {info['denoiser']!r}, which has no config.json")


def check_text_side(adapter: Any, prompt: str) -> None:
    """Rows: one per prompt, the same width for prompts and the negative;
    words: a plain lowercase prompt's words are its whitespace-separated words,
    each word's tokens in order without overlap."""
    rows = adapter.encode_prompts([prompt, "a"])
    neg = adapter.encode_negative(prompt, "")
    _expect(len(rows) == 2 and len(neg) == 1, f"encode_prompts gave {len(rows)} rows for 2 prompts and "
                                              f"encode_negative {len(neg)} for 1")
    _expect(tuple(rows.embeds.shape[2:]) == tuple(neg.embeds.shape[2:]),
            f"prompt rows {tuple(rows.embeds.shape)} and the negative row {tuple(neg.embeds.shape)} differ in width")
    _expect((rows.pooled is None) == (neg.pooled is None), "pooled rows are given for prompts or negatives only")
    tokens = adapter.word_tokens(prompt)
    words, groups = adapter.word_groups(prompt)
    _expect(words == tuple(prompt.split()), f"word_groups({prompt!r}) gave words {words}")
    flat = [k for g in groups for k in g]
    _expect(flat == sorted(set(flat)) and all(0 <= k < len(tokens) for k in flat),
            f"word groups {groups} are not increasing token positions of {len(tokens)} tokens")
    _expect(adapter.prompt_token_count(prompt) >= len(tokens), "prompt_token_count is below the tokens it has")


def _views(adapter: Any, n: int, seed: int = 0) -> torch.Tensor:
    side = adapter.native_size // adapter.vae_scale_factor
    return torch.randn((n, adapter.latent_channels, side, side), generator=generator(seed))


def _schedule(adapter: Any, steps: int = 3) -> Any:
    from accdiffusion.models.noise import noise_for, view_tokens
    from accdiffusion.schedulers import fresh_copy

    side = adapter.native_size // adapter.vae_scale_factor
    sched = fresh_copy(noise_for(adapter, adapter.pipeline.scheduler))
    sched.set_timesteps(steps, tokens=view_tokens((side, side), adapter.patch_size))
    return sched


def check_predict(adapter: Any) -> None:
    """Two views at different positions through :meth:`predict`: the views'
    shape back, float32, finite; the same call twice gives the same answer."""
    x = _views(adapter, 2)
    cond = adapter.encode_prompts(["a red circle", "a blue square"])
    sched = _schedule(adapter)
    t = sched.timesteps[0]
    positions = torch.tensor([[0, 0], [adapter.patch_size, 2 * adapter.patch_size]])
    extra = {"guidance": torch.tensor([3.5, 3.5])} if adapter.guidance == "embedded" else {}
    target = (2 * adapter.native_size, 2 * adapter.native_size)
    with torch.inference_mode():
        out = adapter.predict(sched.scale_model_input(x, t), t, cond, positions, target, **extra)
        again = adapter.predict(sched.scale_model_input(x, t), t, cond, positions, target, **extra)
    _expect(tuple(out.shape) == tuple(x.shape), f"predict gave {tuple(out.shape)} for views {tuple(x.shape)}")
    _expect(out.dtype == torch.float32 and bool(torch.isfinite(out).all()), "predict's output is not finite float32")
    _expect(torch.equal(out, again), "predict is not deterministic for the same input")


def check_noise_schedule(adapter: Any) -> None:
    """The noise schedule noises less at later timesteps, keeps shapes, and
    its first timestep's noise level is the start noise's scale."""
    sched = _schedule(adapter, 4)
    x0, noise = _views(adapter, 1, 1), _views(adapter, 1, 2)
    ts = sched.timesteps
    far = (sched.add_noise(x0, noise, ts[:1]) - x0).norm()
    near = (sched.add_noise(x0, noise, ts[-1:]) - x0).norm()
    _expect(bool(far > near), f"add_noise moves x0 by {float(far):.4g} at the first timestep and {float(near):.4g} "
                              "at the last: later timesteps must noise less")
    _expect(tuple(sched.scale_model_input(x0, ts[0]).shape) == tuple(x0.shape), "scale_model_input changed the shape")
    _expect(float(sched.init_noise_sigma) > 0, "init_noise_sigma is not positive")


def check_attention_capture(adapter: Any, prompt: str, factor: int = 4) -> None:
    """Phase-1 capture on one executor call: word maps of the capture's grid,
    one per word, probabilities (non-negative, summing to at most 1 over the
    words); the model's output is unchanged by recording."""
    from accdiffusion.attention import extract_maps
    from accdiffusion.executor import ViewExecutor, ViewGroup

    side = adapter.native_size // adapter.vae_scale_factor
    z = _views(adapter, 1, 3)
    cond = adapter.encode_prompts([prompt])
    ex = ViewExecutor(adapter, adapter.encode_negative(prompt, ""), (adapter.native_size,) * 2, 4)
    sched = _schedule(adapter)
    t = sched.timesteps[0]
    with torch.inference_mode():
        plain = ex.evaluate(sched, t, [ViewGroup(z, cond, 5.0)])[0]
        with adapter.attention_capture(factor) as capture:
            capture.recorder.cfg = adapter.guidance == "cfg"
            recorded = ex.evaluate(sched, t, [ViewGroup(z, cond, 5.0)])[0]
    _expect(bool(torch.allclose(plain, recorded, atol=1e-4, rtol=1e-4)),
            f"recording changed the output by {float((plain - recorded).abs().max()):.3g}")
    grid = capture.grid(side, side)
    maps = extract_maps(capture.recorder, adapter, prompt, side, side, capture.latent_per_map, grid=grid)
    words, _ = adapter.word_groups(prompt)
    _expect(tuple(maps.maps.shape) == (*grid, len(words)), f"maps {tuple(maps.maps.shape)}, expected "
                                                           f"{(*grid, len(words))}")
    token_total = maps.token_maps.sum(dim=-1)
    _expect(bool((maps.maps >= 0).all()) and bool((token_total <= 1 + 1e-4).all()),
            "the maps are not attention probabilities over the prompt's tokens")


def check_codec(adapter: Any) -> None:
    """Latents decode to images of ``vae_scale_factor`` times their size in
    [-1, 1], and encode back to latents of the same shape."""
    z = _views(adapter, 1, 4)
    with torch.inference_mode():
        image = adapter.decode_latents(z)
        back = adapter.encode_images(image)
    f = adapter.vae_scale_factor
    _expect(tuple(image.shape) == (1, 3, z.shape[2] * f, z.shape[3] * f), f"decoded {tuple(image.shape)}")
    _expect(float(image.min()) >= -1 and float(image.max()) <= 1, "decoded images leave [-1, 1]")
    _expect(tuple(back.shape) == tuple(z.shape), f"encoded back to {tuple(back.shape)}, not {tuple(z.shape)}")


class ModelFamilyContract:
    """Tests every model family must pass (the core's ``sdxl`` and ``sd`` do).

    Set on the subclass ``plugin`` (the plugin object registering the family;
    ``accdiffusion.builtins.BUILTINS`` for the core's) and ``name``, and
    implement :meth:`save_pipeline`, writing a small pipeline of the family
    to a folder (random weights are fine). Optionally ``prompt`` (plain
    lowercase words) and ``attention_factor``; ``records_attention = False``
    for a family without phase-1 attention capture.
    """

    plugin: ClassVar[Any] = None
    name: ClassVar[str] = ""
    prompt: ClassVar[str] = "a red circle and a blue square"
    attention_factor: ClassVar[int] = 4
    records_attention: ClassVar[bool] = True

    def save_pipeline(self, folder: Any) -> None:
        raise NotImplementedError("save a small pipeline of the family to folder")

    @pytest.fixture(scope="class")
    def family_folder(self, tmp_path_factory: pytest.TempPathFactory) -> Any:
        folder = tmp_path_factory.mktemp(f"family-{self.name}")
        self.save_pipeline(folder)
        return folder

    @pytest.fixture(scope="class")
    def family_adapter(self, family_folder: Any) -> Any:
        from accdiffusion.loading import load_pipeline

        host = host_with(self.plugin)
        pipeline = load_pipeline(str(family_folder), families=host.families())
        return host.adapt(pipeline, None)

    def test_registered_by_the_plugin_under_its_name(self) -> None:
        check_family_registration(self.plugin, self.name)

    def test_claims_its_pipeline(self, family_adapter: Any) -> None:
        family = _families(host_with(self.plugin))[self.name]
        _expect(family.claims(family_adapter.pipeline), f"{self.name!r} does not claim its own pipeline")
        _expect(isinstance(family_adapter, family.adapter), f"the host adapted the pipeline with "
                                                            f"{type(family_adapter).__name__}, not {family.adapter.__name__}")

    def test_refuses_a_pipeline_of_no_family(self) -> None:
        with pytest.raises(PluginError, match=f"no model family handles a SimpleNamespace;.*{self.name}"):
            host_with(self.plugin).adapt(types.SimpleNamespace(), None)

    def test_declarations(self, family_adapter: Any) -> None:
        check_adapter_declarations(family_adapter)

    def test_folder_is_read_from_its_configs(self, family_adapter: Any, family_folder: Any) -> None:
        family = _families(host_with(self.plugin))[self.name]
        check_folder_info(family, family_adapter, family_folder, host_with(self.plugin))

    def test_text_side(self, family_adapter: Any) -> None:
        check_text_side(family_adapter, self.prompt)

    def test_predict(self, family_adapter: Any) -> None:
        check_predict(family_adapter)

    def test_noise_schedule(self, family_adapter: Any) -> None:
        check_noise_schedule(family_adapter)

    def test_attention_capture(self, family_adapter: Any) -> None:
        if not self.records_attention:
            with pytest.raises(AccDiffusionError):
                family_adapter.attention_capture(self.attention_factor)
            return
        check_attention_capture(family_adapter, self.prompt, self.attention_factor)

    def test_codec(self, family_adapter: Any) -> None:
        check_codec(family_adapter)

    def test_a_whole_run_is_reproducible(self, family_adapter: Any) -> None:
        from accdiffusion.sampler import Sampler

        decomposer = "cross_attention" if self.records_attention else "identical"
        settings = Settings(prompt=self.prompt, scale=2, steps=2, seed=0, prompt_decomposer=decomposer)
        host = PluginHost([] if self.plugin is None or self.plugin is _builtins() else [self.plugin])
        first = Sampler.from_pipeline(family_adapter.pipeline, settings, host=host)(settings)
        second = Sampler.from_pipeline(family_adapter.pipeline, settings, host=host)(settings)
        _expect(first.image.size == (2 * family_adapter.native_size,) * 2, f"image {first.image.size}")
        _expect(torch.equal(first.latents, second.latents), "two runs with one seed differ")
