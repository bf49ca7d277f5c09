"""What a run will cost, computed before any weights load.

:func:`estimate` takes the run's :class:`~accdiffusion.settings.Plan` and the
schedule stage's answer and counts, per phase, the windows, dilated samples,
timesteps and UNet evaluations (exactly what the sampler will do with the
``sliding_window`` tiler and a dilated global path), and estimates the peak
memory of the run on its device: weights (a structure guidance's local
ControlNet folder included), latents, decoded image, and the activations of
the largest UNet batch and of the VAE decode. The memory
figures are **estimates** (a few live activation tensors per block, counted
from the model's configs), meant to refuse the hopeless runs up front, not
to predict the allocator to the byte.

:func:`check` refuses a run that exceeds a limit: more phases than
``Settings.max_phases``, more UNet evaluations than
``Settings.max_unet_evaluations``, or an estimated peak above
``Settings.max_memory_gb`` (default: the device's free memory). Each refusal
is a :class:`~accdiffusion.errors.ResourceError` that gives the estimate,
the limit and what to change. ``accdiffusion generate --dry-run`` prints the
estimate and exits.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Optional, Sequence

import attrs

from .errors import ResourceError
from .settings import Plan, Settings
from .types import PhaseSchedule

GIB = 2**30
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
#: Live tensors of a block's width at the UNet's largest resolution, per sample (resnet in/out, norm,
#: activation, skip connection, attention in/out): the activation estimate's multiplier.
_UNET_LIVE = 12
#: The same for the VAE decoder at full image resolution.
_VAE_LIVE = 6
#: diffusers' VAE tile (image px) when decoding is tiled (above 2048 px here).
_VAE_TILE = 1024


@attrs.frozen
class PhaseCost:
    """One phase: its size, views per step, timesteps evaluated, UNet evaluations."""

    scale: int
    latent_size: tuple[int, int]
    windows: int
    dilated_samples: int
    timesteps: int
    start: int
    unet_evaluations: int


@attrs.frozen
class Estimate:
    """The cost of a run: phases, UNet evaluations and the peak-memory estimate (bytes)."""

    plan: Plan
    phases: tuple[PhaseCost, ...]
    unet_evaluations: int
    memory: dict = attrs.field(factory=dict)
    peak_bytes: int = 0
    device: str = "cpu"
    available_bytes: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.plan.height, "width": self.plan.width, "factor": self.plan.factor,
            "phases": [attrs.asdict(p) for p in self.phases], "unet_evaluations": self.unet_evaluations,
            "memory_gib": {k: round(v / GIB, 3) for k, v in self.memory.items()},
            "peak_gib": round(self.peak_bytes / GIB, 3), "device": self.device,
            "available_gib": None if self.available_bytes is None else round(self.available_bytes / GIB, 3),
        }

    def lines(self) -> list[str]:
        """The estimate as text (``--dry-run``)."""
        p = self.plan
        out = [f"{p.width}x{p.height} px from {p.native} px native: factor {p.factor}, {len(self.phases)} phases"]
        for ph in self.phases:
            views = "" if ph.scale == 1 else f", {ph.windows} windows + {ph.dilated_samples} dilated samples per step"
            start = f" from timestep index {ph.start}" if ph.start else ""
            out.append(f"  phase {ph.scale}: latent {ph.latent_size[1]}x{ph.latent_size[0]}, "
                       f"{ph.timesteps} timesteps{start}{views}: {ph.unet_evaluations:,} UNet evaluations")
        out.append(f"UNet evaluations: {self.unet_evaluations:,} (CFG halves counted separately)")
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.memory.items())
        avail = "unknown" if self.available_bytes is None else f"{self.available_bytes / GIB:.1f} GiB"
        out.append(f"peak memory estimate on {self.device}: {self.peak_bytes / GIB:.2f} GiB ({parts} GiB); "
                   f"free now: {avail}")
        return out


def sliding_windows(height: int, width: int, window: int, stride: int) -> int:
    """Windows of the ``sliding_window`` tiler on a ``height x width`` latent
    (the last row and column shifted to end at the border)."""

    def count(side: int) -> int:
        if side <= window:
            return 1
        return math.ceil((side - window) / stride) + 1

    return count(height) * count(width)


def phase_costs(settings: Settings, plan: Plan, schedules: Sequence[PhaseSchedule], *, local: bool = True,
                global_path: bool = True, cfg_phase1: Optional[bool] = None) -> tuple[PhaseCost, ...]:
    """Per phase: windows, dilated samples, timesteps and UNet evaluations, as the sampler runs them."""
    g = 2 if settings.guidance_scale > 1 else 1
    m = 2 if settings.multi_guidance_scale > 1 else 1
    g1 = g if cfg_phase1 is None else (2 if cfg_phase1 else 1)
    out = [PhaseCost(1, plan.latent_sizes[0], 0, 0, settings.steps, 0, settings.steps * g1)]
    for s, size, ph in zip(plan.scales[1:], plan.latent_sizes[1:], schedules):
        windows = sliding_windows(size[0], size[1], plan.window, plan.stride) if local else 0
        samples = s * s if global_path else 0
        n = ph.steps - ph.start
        out.append(PhaseCost(s, size, windows, samples, n, ph.start, n * (windows * m + samples * g)))
    return tuple(out)


def _weights_bytes(folder: Optional[Path], dtype: str) -> int:
    """Bytes of the model's weight files, converted to ``dtype`` where they are stored wider."""
    if folder is None or not folder.is_dir():
        return 0
    total = 0
    want = _DTYPE_BYTES[dtype]
    for f in folder.rglob("*"):
        if f.suffix not in (".safetensors", ".bin") or not f.is_file():
            continue
        size = f.stat().st_size
        stored = _stored_bytes(f) if f.suffix == ".safetensors" else 4
        total += size * want // stored if stored > want else size
    return total


def _stored_bytes(path: Path) -> int:
    """Bytes per element of the first tensor in a safetensors file (4 if unknown)."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(min(n, 10_000_000)))
        for key, value in header.items():
            if key != "__metadata__" and isinstance(value, dict):
                return {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}.get(value.get("dtype"), 4)
    except (OSError, ValueError, struct.error):
        pass
    return 4


def _config(folder: Optional[Path], name: str) -> dict:
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8")) if folder is not None else {}
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def available_memory(device: str) -> Optional[int]:
    """Free memory of ``device`` in bytes now (``None`` when it cannot be known)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        if hasattr(os, "sysconf"):
            try:
                return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
            except (ValueError, OSError):
                return None
    return None


def estimate(settings: Settings, plan: Plan, schedules: Sequence[PhaseSchedule], *, device: str = "cpu",
             folder: Optional[str] = None, latent_channels: int = 4, local: bool = True,
             global_path: bool = True, controlnet: Optional[str] = None, denoiser: str = "unet") -> Estimate:
    """The cost of ``settings`` on ``plan`` with ``schedules``; memory from the
    configs and weight files of the local diffusers ``folder`` (when given;
    ``denoiser``: the folder of its denoiser's config), plus those of a local
    ``controlnet`` folder (structure guidance)."""
    path = Path(folder) if folder is not None and Path(folder).is_dir() else None
    phases = phase_costs(settings, plan, schedules, local=local, global_path=global_path)
    dtype_bytes = _DTYPE_BYTES[settings.dtype]
    unet_cfg, vae_cfg = _config(path, f"{denoiser}/config.json"), _config(path, "vae/config.json")
    unet_width = int((unet_cfg.get("block_out_channels") or [320])[0])
    vae_width = int((vae_cfg.get("block_out_channels") or [128])[0])
    weights = _weights_bytes(path, settings.dtype)
    if controlnet and Path(controlnet).is_dir():
        weights += _weights_bytes(Path(controlnet), settings.dtype)  # a ControlNet is about half a UNet more
    if settings.offload == "model":
        weights = weights // 2  # one component at a time; the UNet is the larger half or more
    elif settings.offload == "sequential":
        weights = 0
    lh, lw = plan.latent_sizes[-1]
    latents = 16 * latent_channels * lh * lw * 4  # z, z_up, noise, padded canvas, sums, fused outputs...
    cfg = 2 if max(settings.guidance_scale, settings.multi_guidance_scale) > 1 else 1
    batch = cfg * min(settings.view_batch_size, max((p.windows + p.dilated_samples for p in phases), default=1) or 1)
    unet_act = batch * _UNET_LIVE * unet_width * plan.window * plan.window * dtype_bytes
    side = max(plan.height, plan.width)
    vae_pixels = (min(side, _VAE_TILE) ** 2) if side > 2048 else plan.height * plan.width
    vae_act = _VAE_LIVE * vae_width * vae_pixels * (4 if vae_cfg.get("force_upcast") else dtype_bytes)
    image = 3 * plan.height * plan.width * (4 + 4 + 1)  # float decode, clamped copy, uint8
    memory = {"weights": weights, "latents": latents, "unet activations": unet_act,
              "vae activations": vae_act, "image": image}
    peak = weights + latents + max(unet_act, vae_act + image)
    return Estimate(plan, phases, sum(p.unet_evaluations for p in phases), memory, peak, device,
                    available_memory(device))


def folder_timesteps(folder: Optional[str], scheduler: str, tokens: Optional[int] = None):
    """``timesteps(n)`` for a ScheduleRequest from a local folder's scheduler config (no weights);
    ``tokens``: one view's sequence length, for a flow schedule that shifts by it."""
    from .models.noise import schedule_for
    from .schedulers import fresh_copy, make_scheduler

    def timesteps(n: int) -> tuple[int, ...]:
        import diffusers

        cfg = _config(Path(folder), "scheduler/scheduler_config.json") if folder else {}
        cls = getattr(diffusers, str(cfg.get("_class_name", "EulerDiscreteScheduler")), diffusers.EulerDiscreteScheduler)
        sched = fresh_copy(schedule_for(make_scheduler(scheduler, cls.from_config(cfg))))
        sched.set_timesteps(int(n), tokens=tokens)
        return tuple(int(t) for t in sched.timesteps)

    return timesteps


def check(est: Estimate, settings: Settings) -> None:
    """Refuse a run over a limit, naming the estimate, the limit and what to change."""
    p = est.plan
    if len(est.phases) > settings.max_phases:
        raise ResourceError(
            f"{p.width}x{p.height} px from {p.native} px native means factor {p.factor}: {len(est.phases)} phases, "
            f"more than max_phases={settings.max_phases}; ask for a smaller size or scale, use a model with a "
            f"larger native size, --no-progressive, or raise --max-phases")
    if est.unet_evaluations > settings.max_unet_evaluations:
        raise ResourceError(
            f"this run needs {est.unet_evaluations:,} UNet evaluations, more than "
            f"max_unet_evaluations={settings.max_unet_evaluations:,}; lower --steps, the size or scale, try "
            f"--schedule fast, or raise --max-unet-evaluations")
    limit = None if settings.max_memory_gb is None else int(settings.max_memory_gb * GIB)
    which = f"max_memory_gb={settings.max_memory_gb}"
    if limit is None and est.available_bytes is not None:
        limit, which = est.available_bytes, f"the {est.available_bytes / GIB:.1f} GiB free on {est.device}"
    if limit is not None and est.peak_bytes > limit:
        raise ResourceError(
            f"the estimated peak memory of this run is {est.peak_bytes / GIB:.2f} GiB, more than {which}; "
            f"lower --view-batch-size, use --dtype float16, --offload model, a smaller size, "
            f"or raise --max-memory-gb (the estimate is rough)")
