"""The stage interfaces a plugin can implement.

A *stage object* is created once per run by a factory registered through the
hooks in :mod:`accdiffusion.hookspecs` (or passed directly to the sampler).
Stage objects may keep state between steps of one run; they never keep state
between runs.

Each protocol names the paper's part it stands for:

* :class:`PromptDecomposer`: patch-content-aware prompts (AccDiffusion eq. 5-8).
* :class:`Tiler`: the local path's windows (MultiDiffusion views, DemoFusion jitter).
* :class:`GlobalGuidance`: the global path (DemoFusion dilated sampling,
  AccDiffusion window interaction).
* :class:`Upscaler`: latent upscaling between phases (DemoFusion progressive upscaling).
* :class:`Schedule`: the steps of each upscaling phase and the timestep it starts
  from (DemoFusion's full schedule from pure noise, or part-way down for speed).
* :class:`StructureGuidance`: extra per-window conditioning of the local path
  (AccDiffusion v2's ControlNet on the previous phase's edges).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, runtime_checkable

import torch

from .types import (
    AttentionMaps,
    ControlViews,
    DecomposeRequest,
    GlobalViews,
    GuidanceRequest,
    PatchPrompts,
    PhaseSchedule,
    ScheduleRequest,
    StructureRequest,
    WindowLayout,
)

STAGES: tuple[str, ...] = ("prompt_decomposer", "tiler", "global_guidance", "upscaler", "schedule",
                           "structure_guidance")


@runtime_checkable
class PromptDecomposer(Protocol):
    """Gives every local window its own prompt.

    Everything the sampler relies on is declared here (class attributes are
    enough for the two flags):

    * ``needs_attention``: phase 1 records cross-attention maps for this
      decomposer (``DecomposeRequest.attention`` is then set when the run
      upscales).
    * ``fixed_windows``: the local windows are laid out once per upscaling
      phase, so that each keeps its prompt for the whole phase; ``False``
      re-tiles them at every step (DemoFusion's jitter drawn anew each step),
      calling :meth:`decompose` for each new layout.
    * :meth:`word_masks`: what the decomposer can show as pictures: one mask
      per word of the attention maps, or ``None`` for nothing to show.
    """

    needs_attention: bool
    fixed_windows: bool

    def decompose(self, request: DecomposeRequest) -> PatchPrompts:
        """One prompt per window of ``request.layout``, in window order."""
        ...

    def word_masks(self, attention: AttentionMaps) -> Optional[torch.Tensor]:
        """Bool ``(n_words, h_a, w_a)`` masks of the words of ``attention`` as
        this decomposer sees them (drawn under the attention maps in the run
        folder's pictures), or ``None``."""
        ...


@runtime_checkable
class Tiler(Protocol):
    """Lays out the local path's windows on a latent canvas."""

    def layout(
        self,
        height: int,
        width: int,
        window: int,
        stride: int,
        generator: Optional[torch.Generator],
    ) -> WindowLayout:
        """Windows of ``window x window`` (clipped to the canvas where it is
        smaller) covering every pixel of a ``height x width`` latent canvas.

        ``generator`` is the run's generator (``None`` outside a run): a
        tiler that moves its windows at random draws from it, and only
        then; coordinates are on the canvas padded by ``layout.pad``."""
        ...


@runtime_checkable
class GlobalGuidance(Protocol):
    """The global path: a guided model output for the whole canvas."""

    def predict(self, request: GuidanceRequest) -> torch.Tensor:
        """Guided model output with the shape of ``request.latents``."""
        ...

    def views(self, request: GuidanceRequest) -> Optional[GlobalViews]:
        """The views of this step and how to assemble their outputs, so that
        the sampler evaluates them in the same UNet batches as the step's
        local windows; or ``None``, and the sampler calls :meth:`predict`.
        Must draw from ``request.generator`` exactly what ``predict`` would."""
        ...


class LatentCodec(Protocol):
    """Encodes images to latents and back (the model adapter provides it)."""

    vae_scale_factor: int

    def encode_images(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` in ``[-1, 1]`` to scaled latents."""
        ...

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents to images ``(N, 3, H, W)`` in ``[-1, 1]``."""
        ...


@runtime_checkable
class Upscaler(Protocol):
    """Brings the previous phase's latents to the next phase's size."""

    def upscale(self, latents: torch.Tensor, size: tuple[int, int], codec: LatentCodec) -> torch.Tensor:
        """Latents ``(1, C, h, w)`` resized to ``(1, C, *size)`` (latent pixels)."""
        ...


@runtime_checkable
class Schedule(Protocol):
    """Decides how each upscaling phase runs: its number of steps, the
    timestep it starts from, and whether the skip residual applies."""

    def plan(self, request: ScheduleRequest) -> tuple[PhaseSchedule, ...]:
        """One :class:`PhaseSchedule` per entry of ``request.scales``."""
        ...


@runtime_checkable
class StructureGuidance(Protocol):
    """Extra conditioning for the local windows' UNet calls (AccDiffusion v2's
    structure guidance: a ControlNet fed with the previous phase's edges)."""

    def prepare(self, adapter: Any) -> None:
        """Called once per run before any UNet work with the run's model
        adapter: load models and check them against the base model (raise
        :class:`~accdiffusion.errors.ModelError` or ``SettingsError`` on a mismatch)."""
        ...

    def control(self, request: StructureRequest) -> Optional[ControlViews]:
        """Control for each window of ``request.layout``, or ``None`` for none."""
        ...

    def pictures(self) -> tuple:
        """``(scale, PIL image)`` pairs of the control images used so far
        (written to the run folder's ``control/``); empty for none."""
        ...


#: A factory registered for a stage: builds the stage object from the run's settings.
StageFactory = Callable[["object"], object]

PROTOCOLS: dict[str, type] = {
    "prompt_decomposer": PromptDecomposer,
    "tiler": Tiler,
    "global_guidance": GlobalGuidance,
    "upscaler": Upscaler,
    "schedule": Schedule,
    "structure_guidance": StructureGuidance,
}


def missing_members(obj: Any, stage: str) -> list[str]:
    """The members of ``stage``'s protocol that ``obj`` lacks (for error messages)."""
    import typing

    protocol = PROTOCOLS[stage]
    members = sorted(getattr(protocol, "__protocol_attrs__", None) or typing._get_protocol_attrs(protocol))
    return [m for m in members if not hasattr(obj, m)]
