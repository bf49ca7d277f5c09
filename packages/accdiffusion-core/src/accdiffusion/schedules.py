"""The built-in schedule stage: ``paper`` (default) and ``fast``.

A schedule decides, once per run and before any UNet work, how each
upscaling phase runs (:class:`~accdiffusion.types.PhaseSchedule`): the number
of scheduler steps, the index of the timestep it starts from (the upscaled
latents are noise-inverted to that timestep instead of to ``T``) and
whether the skip residual applies. Both are registered from the core's
registration list (:mod:`accdiffusion.builtins`) exactly like a plugin's schedule.

* ``paper``: DemoFusion / AccDiffusion as published: every upscaling phase
  runs the run's ``steps`` from the noisiest timestep, skip residual on.
* ``fast``: every upscaling phase starts part-way down the schedule
  (``start_fraction``, default 0.7 of the way) with the skip residual on,
  the idea of DiffuseHigh, FreCaS and ScaleDiff: the upscaled latents
  already hold the layout, so the noisiest steps only redraw it. At the
  default it evaluates at most 30% of the upscaling timesteps (6 of 20,
  4 of 15, 15 of 50);
  docs/schedules.md gives the measurements behind the default.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from .errors import PluginError
from .options import option
from .types import PhaseSchedule, ScheduleRequest


@attrs.frozen
class PaperSchedule:
    """Every upscaling phase: ``steps`` timesteps from the noisiest, skip residual on."""

    def plan(self, request: ScheduleRequest) -> tuple[PhaseSchedule, ...]:
        return tuple(PhaseSchedule(steps=request.steps, start=0, skip_residual=True) for _ in request.scales)


@attrs.frozen
class FastSchedule:
    """Each upscaling phase starts ``start_fraction`` of the way down its schedule.

    The phase keeps ``steps`` scheduler timesteps and begins at index
    ``ceil(start_fraction * steps)`` (at least one timestep is always
    evaluated), so it costs at most ``1 - start_fraction`` of a ``paper`` phase.
    ``skip_residual``: keep DemoFusion's skip residual in the phases.
    """

    start_fraction: float = option(0.7, minimum=0.0, maximum=1.0, max_exclusive=True,
                                   help="share of each upscaling phase's timesteps skipped at its start")
    skip_residual: bool = option(True, help="keep DemoFusion's skip residual in the upscaling phases")

    def plan(self, request: ScheduleRequest) -> tuple[PhaseSchedule, ...]:
        n = request.steps
        start = min(n - 1, math.ceil(self.start_fraction * n - 1e-9))
        return tuple(PhaseSchedule(steps=n, start=start, skip_residual=self.skip_residual) for _ in request.scales)


def validate_schedule(phases: Any, request: ScheduleRequest, source: str) -> tuple[PhaseSchedule, ...]:
    """``phases`` checked against ``request``: one :class:`PhaseSchedule` per
    upscaling phase, ``steps >= 1`` and ``0 <= start < steps``. Raises
    :class:`PluginError` naming ``source`` and the bad value."""
    try:
        phases = tuple(phases)
    except TypeError:
        raise PluginError(f"{source} returned {phases!r}, not a sequence of PhaseSchedule") from None
    if len(phases) != len(request.scales):
        raise PluginError(f"{source} returned {len(phases)} phase schedules for {len(request.scales)} upscaling "
                          f"phases (scales {list(request.scales)})")
    for scale, ph in zip(request.scales, phases):
        if not isinstance(ph, PhaseSchedule):
            raise PluginError(f"{source} returned {ph!r} for phase {scale}, not a PhaseSchedule")
        if not (isinstance(ph.steps, int) and not isinstance(ph.steps, bool) and ph.steps >= 1):
            raise PluginError(f"{source}: phase {scale} has steps={ph.steps!r}; allowed: an integer >= 1")
        if not (isinstance(ph.start, int) and not isinstance(ph.start, bool) and 0 <= ph.start < ph.steps):
            raise PluginError(f"{source}: phase {scale} has start={ph.start!r}, outside its {ph.steps} timesteps; "
                              f"allowed: an index in [0, {ph.steps - 1}]")
    return phases
