"""Noise schedules behind one interface: discrete-time diffusion and rectified flow.

The sampler never calls a diffusers scheduler directly; it calls a
:class:`NoiseSchedule`, which the model adapter builds around the run's
scheduler (:meth:`accdiffusion.models.ModelAdapter.noise_schedule`):

* :class:`DiscreteTimeNoise` (epsilon / v prediction: DDIM, Euler, DPM-Solver++,
  UniPC, ...) delegates every call to the diffusers scheduler unchanged, so
  the UNet families compute exactly what they computed on the scheduler itself;
* :class:`FlowMatchNoise` (``FlowMatchEulerDiscreteScheduler``: FLUX.1, SD3)
  noises by the flow interpolation ``x_t = (1 - sigma) x_0 + sigma * noise``
  at the timestep's sigma, scales nothing, starts from unit noise, and gives
  the scheduler the shift ``mu`` of the image's token count when it shifts
  dynamically (FLUX).

Every method a phase needs is here: ``set_timesteps`` (with the token count a
dynamic shift is computed from), ``timesteps``, ``init_noise_sigma``,
``add_noise``, ``scale_model_input``, ``set_begin_index``, ``step``, ``fresh``.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Optional

import torch


@functools.lru_cache(maxsize=None)
def _takes_generator(step: Any) -> bool:
    return "generator" in inspect.signature(step).parameters


class DiscreteTimeNoise:
    """A diffusers scheduler, every call passed through unchanged."""

    kind = "discrete"

    def __init__(self, scheduler: Any) -> None:
        if isinstance(scheduler, DiscreteTimeNoise):
            scheduler = scheduler.scheduler
        self.scheduler = scheduler

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.scheduler).__name__})"

    @property
    def config(self) -> Any:
        return self.scheduler.config

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def fresh(self) -> "DiscreteTimeNoise":
        """An unstepped schedule of the same kind, class and config (no history)."""
        return type(self)(type(self.scheduler).from_config(self.scheduler.config))

    def set_timesteps(self, steps: int, device: Any = None, *, tokens: Optional[int] = None) -> None:
        """``steps`` timesteps; ``tokens`` (the denoiser's sequence length of
        one view) matters only to schedules that shift by it."""
        self.scheduler.set_timesteps(steps, device=device)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    @property
    def init_noise_sigma(self) -> Any:
        return self.scheduler.init_noise_sigma

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x0`` noised to timestep ``t`` (a one-element tensor)."""
        return self.scheduler.add_noise(x0, noise, t)

    def scale_model_input(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self.scheduler.scale_model_input(x, t)

    def set_begin_index(self, index: int) -> None:
        """Tell the scheduler that stepping starts at timestep ``index`` (where it has the notion)."""
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(index)

    def step(self, output: torch.Tensor, t: Any, z: torch.Tensor, generator: Optional[torch.Generator] = None,
             return_dict: bool = False) -> tuple[torch.Tensor]:
        """One step; the run's generator goes to schedulers that draw noise."""
        if _takes_generator(type(self.scheduler).step):
            return (self.scheduler.step(output, t, z, generator=generator, return_dict=False)[0],)
        return (self.scheduler.step(output, t, z, return_dict=False)[0],)


def flow_shift_mu(tokens: int, config: Any) -> float:
    """FLUX's dynamic shift: ``mu`` linear in the token count between
    ``(base_image_seq_len, base_shift)`` and ``(max_image_seq_len, max_shift)``
    (diffusers' ``calculate_shift`` with the scheduler config's values)."""
    x1 = float(config.get("base_image_seq_len", 256))
    x2 = float(config.get("max_image_seq_len", 4096))
    y1 = float(config.get("base_shift", 0.5))
    y2 = float(config.get("max_shift", 1.15))
    m = (y2 - y1) / (x2 - x1)
    return float(tokens) * m + (y1 - m * x1)


class FlowMatchNoise(DiscreteTimeNoise):
    """Rectified flow (``FlowMatchEulerDiscreteScheduler``): the model predicts
    the velocity ``noise - x_0``; ``x_t = (1 - sigma) x_0 + sigma * noise``."""

    kind = "flow"

    @property
    def dynamic_shift(self) -> bool:
        return bool(self.scheduler.config.get("use_dynamic_shifting", False))

    def set_timesteps(self, steps: int, device: Any = None, *, tokens: Optional[int] = None) -> None:
        if self.dynamic_shift:
            if tokens is None:
                raise ValueError("this flow schedule shifts by the token count: set_timesteps needs tokens=")
            self.scheduler.set_timesteps(steps, device=device, mu=flow_shift_mu(tokens, self.scheduler.config))
        else:
            self.scheduler.set_timesteps(steps, device=device)

    @property
    def init_noise_sigma(self) -> float:
        return 1.0

    def sigma(self, t: Any) -> torch.Tensor:
        """The sigma of timestep ``t`` of the current timesteps (the last sigma, 0, is never a timestep)."""
        timesteps = self.scheduler.timesteps
        t = torch.as_tensor(t, dtype=timesteps.dtype, device=timesteps.device).reshape(-1)[:1]
        at = torch.nonzero(torch.isclose(timesteps, t), as_tuple=True)[0]
        if at.numel() == 0:
            raise ValueError(f"timestep {float(t)} is not one of this schedule's {len(timesteps)} timesteps")
        return self.scheduler.sigmas[int(at[0])]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma(t).to(x0.device, x0.dtype)
        return (1.0 - sigma) * x0 + sigma * noise

    def scale_model_input(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return x


def schedule_for(scheduler: Any) -> DiscreteTimeNoise:
    """The noise schedule of a diffusers scheduler: :class:`FlowMatchNoise` for
    the flow-matching schedulers, else :class:`DiscreteTimeNoise`."""
    if isinstance(scheduler, DiscreteTimeNoise):
        return scheduler
    if type(scheduler).__name__.startswith("FlowMatch"):
        return FlowMatchNoise(scheduler)
    return DiscreteTimeNoise(scheduler)


def noise_for(adapter: Any, scheduler: Any) -> DiscreteTimeNoise:
    """``adapter.noise_schedule(scheduler)``, or :func:`schedule_for` for an
    adapter that does not choose."""
    choose = getattr(adapter, "noise_schedule", None)
    return choose(scheduler) if callable(choose) else schedule_for(scheduler)


def view_tokens(latent_size: tuple[int, int], patch_size: int = 1) -> int:
    """The denoiser's sequence length of one view of ``latent_size`` (``(h, w)`` latent pixels)."""
    h, w = latent_size
    return math.ceil(h / patch_size) * math.ceil(w / patch_size)
