"""Frozen values passed between the stages of a run.

Every value here is immutable (``attrs`` frozen classes); derive new ones with
:func:`attrs.evolve`. Tensor fields compare by identity (``eq=False``).
Coordinates are in *latent pixels* unless a name says otherwise.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import attrs
import torch


@attrs.frozen
class Window:
    """One local patch (a MultiDiffusion *view*) on a canvas.

    ``top``/``left`` are measured on the tiler's *padded* canvas (see
    :class:`WindowLayout.pad`); ``height``/``width`` are the window's size.
    """

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    def shifted(self, dy: int, dx: int) -> "Window":
        """The same window moved by ``(dy, dx)``."""
        return Window(self.top + dy, self.left + dx, self.height, self.width)


@attrs.frozen
class WindowLayout:
    """The windows of one local-path step.

    The canvas of ``canvas_height x canvas_width`` latent pixels is padded by
    ``pad`` on every side (random jitter moves windows into that padding); the
    windows' coordinates are on the padded canvas, whose size is
    ``(canvas_height + 2 pad, canvas_width + 2 pad)``. Every pixel of the
    unpadded canvas is covered by at least one window.
    """

    windows: tuple[Window, ...]
    canvas_height: int
    canvas_width: int
    pad: int = 0

    def __len__(self) -> int:
        return len(self.windows)

    def on_canvas(self) -> tuple[Window, ...]:
        """Windows in unpadded canvas coordinates (may start below zero)."""
        return tuple(w.shifted(-self.pad, -self.pad) for w in self.windows)

    def coverage(self) -> torch.Tensor:
        """How many windows cover each pixel of the unpadded canvas (int tensor)."""
        count = torch.zeros(
            self.canvas_height + 2 * self.pad, self.canvas_width + 2 * self.pad, dtype=torch.int64
        )
        for w in self.windows:
            count[w.top : w.bottom, w.left : w.right] += 1
        p = self.pad
        return count[p : p + self.canvas_height, p : p + self.canvas_width]


@attrs.frozen
class AttentionMaps:
    """Phase-1 cross-attention maps of the prompt's words.

    ``maps`` has shape ``(h_a, w_a, n_words)`` (row-major spatial layout), one
    map per entry of ``words``: the prompt's whole words (see
    ``ModelAdapter.word_groups``), each the mean of its tokens' maps.
    ``latent_per_map`` is how many latent pixels one map pixel spans at
    phase 1 (4 for SDXL and SD 1.5).

    The per-token maps stay available for the release's one-word-per-token
    behaviour: ``token_maps`` ``(h_a, w_a, n_tokens)`` with ``tokens`` (the
    prompt's tokens without BOS/EOS, decoded one by one), and ``groups[j]``
    the positions in ``tokens`` of word ``j``'s tokens. Maps built by hand may
    leave them out (``token_maps=None``); :meth:`per_token` then returns the
    maps unchanged.
    """

    maps: torch.Tensor = attrs.field(eq=False)
    words: tuple[str, ...]
    latent_per_map: int
    token_maps: Optional[torch.Tensor] = attrs.field(default=None, eq=False)
    tokens: tuple[str, ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()

    def per_token(self) -> "AttentionMaps":
        """The maps with one "word" per token (the release's form): ``maps =
        token_maps``, ``words = tokens``; ``self`` when there are no token maps."""
        if self.token_maps is None:
            return self
        n = int(self.token_maps.shape[-1])
        return AttentionMaps(self.token_maps, self.tokens, self.latent_per_map, self.token_maps, self.tokens,
                             tuple((k,) for k in range(n)))


@attrs.frozen
class PatchPrompts:
    """One prompt per window, as a decomposer returns them.

    ``prompts[k]`` is the prompt of ``layout.windows[k]``; ``words[k]`` the
    words kept for it (empty for decomposers that do not select words).
    """

    prompts: tuple[str, ...]
    words: tuple[tuple[str, ...], ...] = ()

    def unique(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Distinct prompts in first-seen order, and each window's index into them."""
        order: dict[str, int] = {}
        index = []
        for p in self.prompts:
            if p not in order:
                order[p] = len(order)
            index.append(order[p])
        return tuple(order), tuple(index)


@attrs.frozen
class DecomposeRequest:
    """What a prompt decomposer gets for one upscaling phase.

    ``scale`` is the phase's scale factor ``s`` relative to phase 1;
    ``attention`` is ``None`` when the decomposer does not need it (see
    ``PromptDecomposer.needs_attention``) or no maps exist; ``low_res_image``
    returns the phase-1 image (decoded on first call) for decomposers that
    segment pixels.
    """

    prompt: str
    layout: WindowLayout
    scale: int
    attention: Optional[AttentionMaps] = attrs.field(default=None, eq=False)
    low_res_image: Optional[Callable[[], "object"]] = attrs.field(default=None, eq=False)


@attrs.frozen
class Conditioning:
    """Text conditioning for a batch of prompts (one row per prompt).

    ``embeds``: ``(P, L, D)`` token embeddings; ``pooled``: ``(P, Dp)`` pooled
    embeddings (SDXL) or ``None``.
    """

    embeds: torch.Tensor = attrs.field(eq=False)
    pooled: Optional[torch.Tensor] = attrs.field(default=None, eq=False)

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def select(self, index: Sequence[int] | torch.Tensor) -> "Conditioning":
        """Rows ``index`` (repeats allowed)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.embeds.device)
        return Conditioning(
            self.embeds.index_select(0, idx),
            None if self.pooled is None else self.pooled.index_select(0, idx),
        )


@attrs.frozen
class ViewBatchRequest:
    """A batch of native-size latents for the UNet, with classifier-free guidance.

    ``latents``: ``(N, C, h, w)``, not yet scaled by the scheduler.
    ``prompts``: one prompt per view, or ``None`` for the whole prompt (each
    distinct prompt is encoded once per run). ``positions``: ``(N, 2)`` (top,
    left) of each view on the canvas in latent pixels, for a model that
    conditions on where a view lies (SDXL's crop coordinates), or ``None``
    for views of the whole canvas.
    """

    latents: torch.Tensor = attrs.field(eq=False)
    guidance_scale: float
    prompts: Optional[tuple[str, ...]] = None
    positions: Optional[tuple[tuple[int, int], ...]] = None


#: ``denoise(request) -> guided model outputs (N, C, h, w)``: the UNet with CFG,
#: batched by the run's view batch size. Given to the global guidance stage.
DenoiseFn = Callable[[ViewBatchRequest], torch.Tensor]


@attrs.frozen
class GuidanceRequest:
    """What the global guidance stage gets at one step of phase ``scale``.

    ``latents``: the full canvas ``(1, C, H, W)`` (unscaled, after the skip
    residual). ``cosine_factor``: ``0.5 (1 + cos(pi (T - t) / T))``.
    ``denoise`` evaluates the UNet on native-size views with the whole prompt
    and ``guidance_scale``. ``generator`` feeds all randomness.
    """

    latents: torch.Tensor = attrs.field(eq=False)
    scale: int
    timestep: float
    step_index: int
    cosine_factor: float
    guidance_scale: float
    denoise: DenoiseFn = attrs.field(eq=False)
    generator: Optional[torch.Generator] = attrs.field(default=None, eq=False)


@attrs.frozen
class GlobalViews:
    """The views the global path wants evaluated at one step, and how to put
    their guided outputs back on the canvas.

    Returned by :meth:`accdiffusion.stages.GlobalGuidance.views`; the sampler
    sends ``batch`` through the view executor together with the local windows
    of the same step (fewer, fuller UNet batches), then calls
    ``assemble(outputs)`` with the guided outputs ``(N, C, h, w)`` in the order
    of ``batch.latents`` to get the global output ``(1, C, H, W)``.
    """

    batch: ViewBatchRequest
    assemble: Callable[[torch.Tensor], torch.Tensor] = attrs.field(eq=False)


@attrs.frozen
class PhaseSchedule:
    """How one upscaling phase runs, as the schedule stage decides.

    The phase's scheduler is set to ``steps`` timesteps; the phase noise-inverts
    the upscaled latents to ``timesteps[start]`` and denoises from there, so it
    evaluates ``steps - start`` timesteps. ``skip_residual`` turns DemoFusion's
    skip residual on or off for the phase (it still needs the run's
    ``skip_residual`` setting on).
    """

    steps: int
    start: int = 0
    skip_residual: bool = True

    @property
    def evaluated_steps(self) -> int:
        """Timesteps the phase denoises: ``steps - start``."""
        return self.steps - self.start


@attrs.frozen
class ScheduleRequest:
    """What the schedule stage gets once per run, before any UNet work.

    ``scales`` and ``latent_sizes`` are those of the upscaling phases (phase 1
    excluded) in order; ``steps`` is the run's ``steps`` setting;
    ``timesteps(n)`` returns the scheduler's timesteps for ``n`` steps (a
    tuple of ints, first = noisiest), so a stage can choose a start by
    timestep value; ``factor`` is ``S``.
    """

    scales: tuple[int, ...]
    latent_sizes: tuple[tuple[int, int], ...]
    steps: int
    factor: int
    num_train_timesteps: int
    scheduler: str
    timesteps: Callable[[int], tuple[int, ...]] = attrs.field(eq=False)


@attrs.frozen
class StructureRequest:
    """What the structure-guidance stage gets for each local window layout of
    an upscaling phase (once per phase with fixed windows, else at every new
    layout).

    ``layout`` is the phase's window layout (windows on the canvas padded by
    ``layout.pad``), ``latent_size`` the phase's unpadded latent ``(h, w)``,
    ``vae_scale_factor`` image pixels per latent pixel, so the phase's image is
    ``latent_size * vae_scale_factor`` px and a window's image crop starts at
    ``(top * vae_scale_factor, left * vae_scale_factor)`` on the padded image
    (the SDXL crop coordinates the sampler passes too). ``previous_image()``
    decodes the previous phase's result (phase 1's image for ``scale = 2``)
    on first call; a stage that does not call it costs no decoding.
    ``steps`` is the number of timesteps the phase evaluates.
    """

    scale: int
    layout: WindowLayout
    latent_size: tuple[int, int]
    vae_scale_factor: int
    steps: int
    previous_image: Callable[[], "object"] = attrs.field(eq=False)


@attrs.frozen
class ControlViews:
    """Per-window extra conditioning from a structure guidance: the control
    image of each local window and the model that turns it into UNet residuals.

    ``images``: ``(N, 3, H, W)`` in ``[0, 1]``, one per window of the layout in
    window order, each ``H x W`` = the window's size in image pixels;
    ``model``: a diffusers ``ControlNetModel`` (or anything the run's model
    adapter's ``control_residuals`` accepts); ``scale``: the conditioning
    scale of its residuals; ``start``/``end``: the fractions of the phase's
    evaluated steps during which it applies (diffusers'
    ``control_guidance_start``/``end``: step ``i`` of ``n`` is guided unless
    ``i / n < start`` or ``(i + 1) / n > end``).
    """

    images: torch.Tensor = attrs.field(eq=False)
    model: object = attrs.field(eq=False)
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def active(self, i: int, n: int) -> bool:
        """Whether step ``i`` of ``n`` is guided."""
        return not (i / n < self.start or (i + 1) / n > self.end)
