"""Scheduler selection.

Every scheduler here is used in the fused form (method section 4): the guided
model outputs of all windows and dilated samples are fused on the full canvas
and the scheduler steps once per timestep, so multistep solvers keep one
history and ancestral samplers draw one noise per step.
"""

from __future__ import annotations

from typing import Any

SCHEDULER_CLASSES = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, base: Any) -> Any:
    """A fresh scheduler: ``name`` from :data:`SCHEDULER_CLASSES` built from
    ``base``'s config, or a fresh copy of ``base`` for ``"default"``."""
    import diffusers

    if name == "default":
        return type(base).from_config(base.config)
    class_name, overrides = SCHEDULER_CLASSES[name]
    overrides = dict(overrides)
    if name == "ddim":
        # Latents are not images: sample clipping (DDIM's own default) is off unless the model asks for it.
        overrides["clip_sample"] = bool(base.config.get("clip_sample", False))
    return getattr(diffusers, class_name).from_config(base.config, **overrides)


def fresh_copy(scheduler: Any) -> Any:
    """An unstepped scheduler of the same class and config (no step history);
    for a noise schedule (:mod:`accdiffusion.models.noise`), its ``fresh()``."""
    fresh = getattr(scheduler, "fresh", None)
    if callable(fresh):
        return fresh()
    return type(scheduler).from_config(scheduler.config)
