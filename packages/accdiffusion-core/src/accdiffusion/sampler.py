"""The stage driver: AccDiffusion / DemoFusion sampling (method sections 1-4).

:class:`Sampler` owns the five stage objects, a model adapter and the
factory of its view executor (:mod:`accdiffusion.executor`, the one way to
the UNet). A run is a chain of units over frozen state values:

* :meth:`Sampler.start` -> :class:`RunState` (plan, seed, schedule, text rows, executor);
* :meth:`Sampler.run_phase1` -> :class:`Phase1Output` (with cross-attention
  capture when the prompt decomposer needs it);
* :meth:`Sampler.run_upscaling_phase`, once per scale: upscale, noise
  inversion to the schedule's start timestep, the steps, renormalisation to
  phase 1's statistics (:class:`PhaseState` holds what is fixed in a phase);
* :meth:`Sampler.step`, once per timestep: skip residual, the local windows
  and the dilated samples through the executor in shared batches, the cosine
  fusion and **one scheduler step on the fused model output** (section 4).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import inspect
import math
import os
import time
from typing import Any, Callable, Optional

import attrs
import torch
import torch.nn.functional as F
from PIL import Image

from .attention import extract_maps
from .models.base import ModelAdapter
from .models.noise import noise_for, schedule_for, view_tokens
from . import preflight
from .executor import ViewExecutor, ViewGroup, guidance_mode, repeat_conditioning
from .errors import PluginError, SettingsError
from .plugins import PluginHost
from .schedules import PaperSchedule, validate_schedule
from .schedulers import fresh_copy, make_scheduler
from .settings import DEFAULT_NEGATIVE_PROMPT, Plan, Settings, plan_sizes
from .stages import STAGES
from .types import (
    AttentionMaps,
    Conditioning,
    ControlViews,
    DecomposeRequest,
    GuidanceRequest,
    PatchPrompts,
    PhaseSchedule,
    ScheduleRequest,
    StructureRequest,
    ViewBatchRequest,
    WindowLayout,
)

#: ``progress(description, total)`` returns an object with ``update(n=1)`` and
#: ``close()`` (a ``tqdm`` fits).
ProgressFactory = Callable[[str, int], Any]


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def cosine_factor(timestep: float, num_train_timesteps: int) -> float:
    """DemoFusion's ``0.5 (1 + cos(pi (T - t) / T))``: 1 at ``t = T``, 0 at ``t = 0``."""
    T = float(num_train_timesteps)
    return 0.5 * (1.0 + math.cos(math.pi * (T - float(timestep)) / T))


def renormalize(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``latents`` shifted and scaled to the given mean and (unbiased) std."""
    return (latents - latents.mean()) / latents.std() * std + mean


def to_image(image: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` in ``[-1, 1]`` to a PIL image."""
    arr = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def from_image(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A PIL image resized (bicubic) to ``size = (height, width)`` as ``(1, 3, H, W)`` in ``[-1, 1]``."""
    image = image.convert("RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BICUBIC)
    t = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size[0], size[1], 3)
    return t.permute(2, 0, 1)[None].float() / 127.5 - 1.0


@attrs.frozen
class PhaseInfo:
    """What one phase did: its scale, latent size, windows and patch prompts, time,
    UNet evaluations (CFG halves counted separately) and its schedule
    (``steps`` scheduler timesteps, started at index ``start``)."""

    scale: int
    latent_size: tuple[int, int]
    seconds: float
    layout: Optional[WindowLayout] = None
    patch_prompts: Optional[PatchPrompts] = None
    unet_evaluations: int = 0
    steps: int = 0
    start: int = 0
    skip_residual: bool = True


@attrs.frozen
class Result:
    """The outcome of a run."""

    image: Image.Image = attrs.field(eq=False)
    latents: torch.Tensor = attrs.field(eq=False)
    seed: int
    plan: Plan
    phases: tuple[PhaseInfo, ...]
    attention: Optional[AttentionMaps] = attrs.field(default=None, eq=False)
    stage_images: tuple[tuple[int, Image.Image], ...] = attrs.field(default=(), eq=False)
    warnings: tuple[str, ...] = ()
    record: dict = attrs.field(factory=dict, eq=False)
    #: The prompt decomposer object that ran (pictures ask it for the masks it used).
    prompt_decomposer: Any = attrs.field(default=None, eq=False)
    #: The schedule of each upscaling phase.
    schedules: tuple[PhaseSchedule, ...] = ()
    #: The structure guidance's control image of each upscaling phase, by scale (empty without one).
    control_images: tuple[tuple[int, Image.Image], ...] = attrs.field(default=(), eq=False)

    @property
    def unet_evaluations(self) -> int:
        """UNet evaluations of the whole run."""
        return sum(p.unet_evaluations for p in self.phases)


@functools.lru_cache(maxsize=None)
def _step_takes_generator(step: Any) -> bool:
    return "generator" in inspect.signature(step).parameters


def scheduler_step(scheduler: Any, output: torch.Tensor, t: Any, z: torch.Tensor,
                   generator: Optional[torch.Generator]) -> torch.Tensor:
    """One step of a noise schedule (:mod:`accdiffusion.models.noise`) or a
    diffusers scheduler, passing the run's generator to schedulers that draw noise."""
    if _step_takes_generator(type(scheduler).step):
        return scheduler.step(output, t, z, generator=generator, return_dict=False)[0]
    return scheduler.step(output, t, z, return_dict=False)[0]


# -- the state a run's units share ---------------------------------------------


@attrs.frozen
class RunState:
    """What stays fixed for a whole run (built once, before phase 1)."""

    settings: Settings
    plan: Plan
    seed: int
    generator: torch.Generator = attrs.field(eq=False)
    device: Any = attrs.field(eq=False)
    base_scheduler: Any = attrs.field(eq=False)
    num_train_timesteps: int
    cond: Conditioning = attrs.field(eq=False)
    uncond: Conditioning = attrs.field(eq=False)
    executor: ViewExecutor = attrs.field(eq=False)
    schedules: tuple[PhaseSchedule, ...]
    needs_attention: bool
    #: whether the prompt decomposer's windows are drawn once per phase
    fixed_windows: bool


@attrs.frozen
class Phase1Output:
    """Phase 1's latents, the attention maps recorded on the way, the anchor statistics."""

    latents: torch.Tensor = attrs.field(eq=False)
    attention: Optional[AttentionMaps] = attrs.field(eq=False)
    anchor_mean: torch.Tensor = attrs.field(eq=False)
    anchor_std: torch.Tensor = attrs.field(eq=False)


@attrs.frozen
class PhaseState:
    """What stays fixed for one upscaling phase: its schedule, schedulers and the
    inversion target ``z_up`` with its noise ``noise``."""

    scale: int
    size: tuple[int, int]
    schedule: PhaseSchedule
    scheduler: Any = attrs.field(eq=False)
    noiser: Any = attrs.field(eq=False)
    z_up: torch.Tensor = attrs.field(eq=False)
    noise: torch.Tensor = attrs.field(eq=False)
    #: the timesteps the phase evaluates (``scheduler.timesteps[schedule.start:]``)
    timesteps: torch.Tensor = attrs.field(eq=False)
    low_res_image: Callable[[], Image.Image] = attrs.field(eq=False)
    attention: Optional[AttentionMaps] = attrs.field(default=None, eq=False)
    #: the previous phase's decoded image (phase 1's for the first upscaling phase), decoded on first call
    previous_image: Optional[Callable[[], Image.Image]] = attrs.field(default=None, eq=False)


@attrs.frozen
class LocalViews:
    """The local path's windows at one step, with everything that depends only
    on them: prompts and their conditioning rows, the windows' positions
    (``(N, 2)`` top, left in latent pixels of the padded canvas), overlap count."""

    layout: WindowLayout
    patch_prompts: PatchPrompts
    cond: Conditioning = attrs.field(eq=False)
    positions: torch.Tensor = attrs.field(eq=False)
    count: torch.Tensor = attrs.field(eq=False)
    key: int = 0
    #: the structure guidance's control of each window (``None``: none)
    control: Optional[ControlViews] = attrs.field(default=None, eq=False)


_layout_keys = itertools.count(1)


def _check_settings(settings: Any) -> None:
    if not isinstance(settings, Settings):
        raise SettingsError(f"settings={type(settings).__name__} is not allowed: an accdiffusion.Settings "
                            "(for example Settings(prompt=..., **options))")


class Sampler:
    """Runs AccDiffusion with five stage objects on one model adapter.

    Build it with :meth:`from_pipeline` to resolve stage names through the
    plugin host, or pass stage objects directly::

        sampler = Sampler(adapter, prompt_decomposer=..., tiler=..., global_guidance=None, upscaler=...)
        result = sampler(Settings(prompt="a cat", height=2048, width=2048, seed=1))

    ``global_guidance=None`` switches the global path off (MultiDiffusion with
    skip residual); ``schedule=None`` is the ``paper`` schedule. ``executor``
    builds the view executor of a run (default: :class:`ViewExecutor`, one
    process): ``executor(adapter, uncond, target, batch_size, known)``.

    A run is three kinds of unit over frozen state values:
    :meth:`run_phase1`, :meth:`run_upscaling_phase` and :meth:`step` (one
    timestep: skip residual, local and global views through the executor
    together, cosine fusion, one scheduler step).
    """

    def __init__(self, adapter: ModelAdapter, *, prompt_decomposer: Any, tiler: Any, global_guidance: Any,
                 upscaler: Any, schedule: Any = None, stage_names: Optional[dict[str, str]] = None,
                 executor: Optional[Callable[..., ViewExecutor]] = None, structure_guidance: Any = None) -> None:
        self.adapter = adapter
        self.prompt_decomposer = prompt_decomposer
        self.tiler = tiler
        self.global_guidance = global_guidance
        self.upscaler = upscaler
        self.schedule = schedule if schedule is not None else PaperSchedule()
        self.executor_factory = executor or ViewExecutor
        #: extra conditioning of the local windows (``None``: none, as the ``none`` stage)
        self.structure_guidance = structure_guidance
        objs = (prompt_decomposer, tiler, global_guidance, upscaler, schedule, structure_guidance)
        names = {stage: ("none" if obj is None else type(obj).__name__) for stage, obj in zip(STAGES, objs)}
        if schedule is None:
            names["schedule"] = "paper"
        if stage_names:
            names.update(stage_names)
        self.stage_names = names

    @classmethod
    def from_pipeline(cls, pipeline: Any, settings: Settings, *, host: Optional[PluginHost] = None,
                      executor: Optional[Callable[..., ViewExecutor]] = None, **stages: Any) -> "Sampler":
        """Adapter and stages for ``pipeline``: each stage is the object given in
        ``stages`` or the plugin named in ``settings``."""
        _check_settings(settings)
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise PluginError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}")
        host = host or PluginHost()
        selected = {stage: stages.get(stage, getattr(settings, stage)) for stage in STAGES}
        host.check_options(settings, selected)
        objs, names = {}, {}
        for stage, chosen in selected.items():
            objs[stage] = host.create(stage, chosen, settings)
            names[stage] = chosen if isinstance(chosen, str) else f"<{type(chosen).__name__}>"
        return cls(host.adapt(pipeline, settings), stage_names=names, executor=executor, **objs)

    def noise_schedule(self, settings: Settings) -> Any:
        """The run's noise schedule: the adapter's, around the scheduler ``settings.scheduler`` names."""
        return noise_for(self.adapter, make_scheduler(settings.scheduler, self.adapter.pipeline.scheduler))

    def view_tokens(self, latent_size: tuple[int, int]) -> int:
        """The denoiser's sequence length of one view of ``latent_size`` (what a flow schedule shifts by)."""
        return view_tokens(latent_size, int(getattr(self.adapter, "patch_size", 1) or 1))

    # -- a run ----------------------------------------------------------------

    def __call__(self, settings: Settings, *, image: Optional[Image.Image] = None,
                 progress: Optional[ProgressFactory] = None) -> Result:
        """Generate (or, with ``image``, upscale) according to ``settings``."""
        _check_settings(settings)
        with torch.inference_mode():
            return self._run(settings, image, progress or (lambda desc, total: _NoProgress()))

    def plan_schedule(self, settings: Settings, plan: Plan,
                      base_scheduler: Any = None) -> tuple[PhaseSchedule, ...]:
        """The schedule stage's answer for ``plan``'s upscaling phases, checked
        (``base_scheduler``: the run's scheduler, built from the settings when not given)."""
        base = base_scheduler or self.noise_schedule(settings)
        request = schedule_request(settings, plan, base, self.view_tokens(plan.latent_sizes[0]))
        source = f"schedule {self.stage_names.get('schedule', type(self.schedule).__name__)!r}"
        return validate_schedule(self.schedule.plan(request), request, source)

    def start(self, settings: Settings) -> RunState:
        """Everything fixed for a run: plan, seed and generator, schedule, text rows, executor."""
        a = self.adapter
        if not settings.local_path and self.global_guidance is None:
            raise SettingsError("local_path=False with global_guidance='none' leaves nothing to sample: "
                                "keep the local path or choose a global guidance")
        plan = plan_sizes(settings, a.native_size, a.vae_scale_factor, int(getattr(a, "patch_size", 1) or 1))
        base = self.noise_schedule(settings)
        schedules = self.plan_schedule(settings, plan, base)
        preflight.check(preflight.estimate(settings, plan, schedules, device=str(a.device),
                                           latent_channels=a.latent_channels, local=settings.local_path,
                                           global_path=self.global_guidance is not None), settings)
        if self.structure_guidance is not None:
            self.structure_guidance.prepare(a)  # load and check its models before any UNet work
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(7), "big")
        cond = a.encode_prompts([settings.prompt])
        uncond = a.encode_negative(settings.prompt, settings.negative_prompt)
        executor = self.executor_factory(a, uncond, (plan.height, plan.width), settings.view_batch_size,
                                         {settings.prompt: cond})
        needs_attention = bool(self.prompt_decomposer.needs_attention) and plan.factor > 1
        fixed = bool(self.prompt_decomposer.fixed_windows)
        return RunState(settings=settings, plan=plan, seed=seed, generator=torch.Generator("cpu").manual_seed(seed),
                        device=a.device, base_scheduler=base, num_train_timesteps=int(base.config.num_train_timesteps),
                        cond=cond, uncond=uncond, executor=executor, schedules=schedules,
                        needs_attention=needs_attention, fixed_windows=fixed)

    def _run(self, settings: Settings, init_image: Optional[Image.Image], progress: ProgressFactory) -> Result:
        a = self.adapter
        run = self.start(settings)
        warnings: list[str] = []
        if a.prompt_token_count(settings.prompt) > a.max_prompt_tokens:
            dropped = a.dropped_text(settings.prompt) if hasattr(a, "dropped_text") else ""
            warnings.append(f"prompt is longer than the text encoder's {a.max_prompt_tokens} tokens; "
                            + (f"dropped: {dropped!r}" if dropped else "the rest is ignored"))
        if guidance_mode(a) == "embedded" and settings.negative_prompt not in ("", DEFAULT_NEGATIVE_PROMPT):
            warnings.append(f"negative_prompt={settings.negative_prompt!r} is not used: the {a.family} model takes "
                            "the guidance scale as an input and runs one pass per view, without negative rows")
        t0, n0 = time.perf_counter(), run.executor.evaluations
        first = self.run_phase1(run, init_image, progress)
        phases = [PhaseInfo(1, run.plan.latent_sizes[0], time.perf_counter() - t0,
                            unet_evaluations=run.executor.evaluations - n0, steps=settings.steps)]
        stage_images: list[tuple[int, Image.Image]] = []
        low_res: dict[str, Image.Image] = {}

        def low_res_image() -> Image.Image:
            if "image" not in low_res:
                low_res["image"] = to_image(a.decode_latents(first.latents))
            return low_res["image"]

        if settings.save_stages and run.plan.factor > 1:
            stage_images.append((1, low_res_image()))
        z = first.latents
        for k, (s, size) in enumerate(zip(run.plan.scales[1:], run.plan.latent_sizes[1:])):
            t0, n0 = time.perf_counter(), run.executor.evaluations
            z, local = self.run_upscaling_phase(run, first, z, k, low_res_image, progress)
            sched = run.schedules[k]
            phases.append(PhaseInfo(
                s, size, time.perf_counter() - t0,
                None if local is None else local.layout, None if local is None else local.patch_prompts,
                unet_evaluations=run.executor.evaluations - n0, steps=sched.steps, start=sched.start,
                skip_residual=bool(settings.skip_residual and sched.skip_residual)))
            if settings.save_stages and s != run.plan.factor:
                stage_images.append((s, to_image(a.decode_latents(z))))

        bar = progress("decode", 1)
        image = to_image(a.decode_latents(z))
        bar.update()
        bar.close()
        if settings.save_stages:
            stage_images.append((run.plan.factor, image))
        return Result(image=image, latents=z.cpu(), seed=run.seed, plan=run.plan, phases=tuple(phases),
                      attention=first.attention, stage_images=tuple(stage_images), warnings=tuple(warnings),
                      prompt_decomposer=self.prompt_decomposer, schedules=run.schedules,
                      control_images=() if self.structure_guidance is None else tuple(self.structure_guidance.pictures()))

    # -- phase 1 -------------------------------------------------------------------

    def run_phase1(self, run: RunState, init_image: Optional[Image.Image] = None,
                   progress: Optional[ProgressFactory] = None) -> Phase1Output:
        """The low-resolution image (or the given image's latents) and its attention maps."""
        a, settings, gen = self.adapter, run.settings, run.generator
        progress = progress or (lambda desc, total: _NoProgress())
        h1, w1 = run.plan.latent_sizes[0]
        capture = a.attention_capture(settings.attention_factor) if run.needs_attention else contextlib.nullcontext()
        with capture:
            if run.needs_attention:
                capture.recorder.cfg = settings.guidance_scale > 1.0 and guidance_mode(a) == "cfg"
            sched = fresh_copy(run.base_scheduler)
            sched.set_timesteps(settings.steps, device=run.device, tokens=self.view_tokens((h1, w1)))
            timesteps = sched.timesteps
            if init_image is None:
                z = torch.randn((1, a.latent_channels, h1, w1), generator=gen).to(run.device) * sched.init_noise_sigma
            else:
                x = from_image(init_image, (h1 * a.vae_scale_factor, w1 * a.vae_scale_factor))
                encoded = a.encode_images(x, gen).to(run.device)
                start = len(timesteps) - max(1, round(len(timesteps) * settings.attention_strength))
                timesteps = timesteps[start:] if run.needs_attention else timesteps[:0]
                if len(timesteps):
                    noise = torch.randn(encoded.shape, generator=gen).to(run.device)
                    z = sched.add_noise(encoded, noise, timesteps[:1])
                    sched.set_begin_index(start)
            bar = progress("phase 1" + (" (image)" if init_image is not None else ""), len(timesteps))
            for t in timesteps:
                view = ViewGroup(z, run.cond, settings.guidance_scale, key="phase1")
                out = run.executor.evaluate(sched, t, [view])[0]
                z = scheduler_step(sched, out, t, z, gen)
                bar.update()
            bar.close()
            if init_image is not None:
                z = encoded
        attention = None
        if run.needs_attention:
            attention = extract_maps(capture.recorder, a, settings.prompt, h1, w1, capture.latent_per_map,
                                     grid=capture.grid(h1, w1))
        return Phase1Output(z, attention, z.mean(), z.std())

    # -- an upscaling phase ----------------------------------------------------------

    def run_upscaling_phase(self, run: RunState, first: Phase1Output, z: torch.Tensor, index: int,
                            low_res_image: Callable[[], Image.Image],
                            progress: Optional[ProgressFactory] = None) -> tuple[torch.Tensor, Optional[LocalViews]]:
        """Upscaling phase ``index`` (0 = the first after phase 1): upscale, noise
        inversion to the schedule's start, the steps, renormalisation (unless
        ``settings.renormalize`` is off). Returns
        the phase's latents and its first step's local views."""
        a, settings, gen = self.adapter, run.settings, run.generator
        progress = progress or (lambda desc, total: _NoProgress())
        s, size = run.plan.scales[index + 1], run.plan.latent_sizes[index + 1]
        ph = run.schedules[index]
        z_up = self.upscaler.upscale(z, size, a).to(run.device)
        sched, noiser, timesteps = phase_schedulers(run.base_scheduler, ph, run.device,
                                                    tokens=self.view_tokens(run.plan.latent_sizes[0]))
        noise = torch.randn(z_up.shape, generator=gen).to(run.device)
        previous = low_res_image if index == 0 else functools.lru_cache(maxsize=1)(
            functools.partial(lambda latents: to_image(a.decode_latents(latents)), z))
        phase = PhaseState(scale=s, size=size, schedule=ph, scheduler=sched, noiser=noiser, z_up=z_up, noise=noise,
                           timesteps=timesteps, low_res_image=low_res_image, attention=first.attention,
                           previous_image=previous)
        local = self.local_views(run, phase) if settings.local_path else None
        first_local = local
        z = noiser.add_noise(z_up, noise, phase.timesteps[:1])
        bar = progress(f"phase {s}/{run.plan.factor} ({size[1] * a.vae_scale_factor}x{size[0] * a.vae_scale_factor})",
                       len(phase.timesteps))
        for i, t in enumerate(phase.timesteps):
            if local is not None and not run.fixed_windows and i > 0:
                local = self.local_views(run, phase)
            z = self.step(run, phase, local, i, t, z)
            bar.update()
        bar.close()
        if settings.renormalize:
            z = renormalize(z, first.anchor_mean, first.anchor_std)
        return z, first_local

    def local_views(self, run: RunState, phase: PhaseState) -> LocalViews:
        """A fresh window layout for ``phase`` (jitter drawn from the run's
        generator), its patch prompts, their rows, crops and overlap count."""
        plan, settings, a = run.plan, run.settings, self.adapter
        h, w = phase.size
        layout = self.tiler.layout(h, w, plan.window, plan.stride, run.generator)
        prompts = self.prompt_decomposer.decompose(DecomposeRequest(
            prompt=settings.prompt, layout=layout, scale=phase.scale, attention=phase.attention,
            low_res_image=phase.low_res_image))
        if len(prompts.prompts) != len(layout.windows):
            raise PluginError(f"prompt decomposer returned {len(prompts.prompts)} prompts "
                              f"for {len(layout.windows)} windows")
        p = layout.pad
        count = torch.zeros((1, 1, h + 2 * p, w + 2 * p), dtype=torch.float32, device=run.device)
        for win in layout.windows:
            count[:, :, win.top:win.bottom, win.left:win.right] += 1
        inner = count[0, 0, p:p + h, p:p + w]
        if bool((inner == 0).any()):
            ys, xs = torch.nonzero(inner == 0, as_tuple=True)
            raise PluginError(f"tiler {self.stage_names.get('tiler', type(self.tiler).__name__)!r} left "
                              f"{ys.numel()} of {h * w} latent pixels uncovered (first at row {int(ys[0])}, "
                              f"column {int(xs[0])}); every pixel needs at least one window")
        vsf = a.vae_scale_factor
        positions = torch.tensor([[win.top, win.left] for win in layout.windows])
        control = None
        if self.structure_guidance is not None:
            control = self.structure_guidance.control(StructureRequest(
                scale=phase.scale, layout=layout, latent_size=(h, w), vae_scale_factor=vsf,
                steps=len(phase.timesteps), previous_image=phase.previous_image or phase.low_res_image))
            if control is not None:
                want = (len(layout.windows), 3, layout.windows[0].height * vsf, layout.windows[0].width * vsf)
                if tuple(control.images.shape) != want:
                    raise PluginError(f"structure guidance {self.stage_names.get('structure_guidance')!r} returned "
                                      f"control images of shape {tuple(control.images.shape)} for "
                                      f"{len(layout.windows)} windows; expected {want}")
        return LocalViews(layout, prompts, run.executor.conditioning(prompts.prompts), positions, count.clamp(min=1),
                          next(_layout_keys), control)

    # -- one step ------------------------------------------------------------------

    def step(self, run: RunState, phase: PhaseState, local: Optional[LocalViews], i: int, t: Any,
             z: torch.Tensor) -> torch.Tensor:
        """One timestep of an upscaling phase: skip residual, the local windows and
        the dilated samples through the executor together, fusion, one scheduler step."""
        settings, sched = run.settings, phase.scheduler
        cos_f = cosine_factor(float(t), run.num_train_timesteps)
        if settings.skip_residual and phase.schedule.skip_residual:
            c1 = cos_f ** settings.cosine_scale_1
            z = (1 - c1) * z + c1 * phase.noiser.add_noise(phase.z_up, phase.noise, t.reshape(1))
        groups: list[ViewGroup] = []
        zp = None
        if local is not None:
            p = local.layout.pad
            zp = F.pad(z, (p, p, p, p)) if p else z
            views = torch.cat([zp[:, :, w.top:w.bottom, w.left:w.right] for w in local.layout.windows])
            control = local.control
            if control is not None and not control.active(i, len(phase.timesteps)):
                control = None
            groups.append(ViewGroup(views, local.cond, settings.multi_guidance_scale, local.positions,
                                    key=("local", local.key), control=control))
        glob = assemble = None
        if self.global_guidance is not None:
            request = GuidanceRequest(latents=z, scale=phase.scale, timestep=float(t), step_index=i,
                                      cosine_factor=cos_f, guidance_scale=settings.guidance_scale,
                                      denoise=functools.partial(self._denoise_views, run, sched, t),
                                      generator=run.generator)
            gv = self.global_guidance.views(request)
            if gv is not None:
                groups.append(self._global_group(run, gv.batch))
                assemble = gv.assemble
            else:
                glob = self.global_guidance.predict(request)
        outs = run.executor.evaluate(sched, t, groups)
        local_out = None
        if local is not None:
            total = torch.zeros_like(zp)
            out = outs[0]
            for k, w in enumerate(local.layout.windows):
                total[:, :, w.top:w.bottom, w.left:w.right] += out[k : k + 1]
            fused = total / local.count
            h, wd = z.shape[-2:]
            p = local.layout.pad
            local_out = fused[:, :, p : p + h, p : p + wd]
        if assemble is not None:
            glob = assemble(outs[-1])
        if local_out is not None and glob is not None:
            c2 = cos_f ** settings.cosine_scale_2
            out = (1 - c2) * local_out + c2 * glob
        else:
            out = local_out if local_out is not None else glob
        return scheduler_step(sched, out, t, z, run.generator)

    def _global_group(self, run: RunState, req: ViewBatchRequest) -> ViewGroup:
        """The executor group for a global-path batch (whole-prompt rows are cached by size)."""
        n = req.latents.shape[0]
        positions = None if req.positions is None else torch.tensor(req.positions)
        if req.prompts is None:
            rows = repeat_conditioning(run.cond, n)
        else:
            if len(req.prompts) != n:
                raise PluginError(f"global guidance asked for {n} views with {len(req.prompts)} prompts")
            rows = run.executor.conditioning(req.prompts)
        key = ("global", n) if req.prompts is None and positions is None else None
        return ViewGroup(req.latents, rows, req.guidance_scale, positions, key=key)

    def _denoise_views(self, run: RunState, sched: Any, t: Any, req: ViewBatchRequest) -> torch.Tensor:
        """``GuidanceRequest.denoise``: a global guidance's own batch through the executor."""
        return run.executor.evaluate(sched, t, [self._global_group(run, req)])[0]


def phase_schedulers(base_scheduler: Any, schedule: PhaseSchedule, device: Any = None, *,
                     tokens: Optional[int] = None) -> tuple[Any, Any, torch.Tensor]:
    """Fresh noise schedules for an upscaling phase: the stepping one, set to
    ``schedule.steps`` timesteps and told it begins at ``schedule.start``
    (``set_begin_index``, where the scheduler has it), the one that noises
    (noise inversion and skip residual), and the timesteps the phase evaluates.
    ``tokens``: the denoiser's sequence length of one view, for a flow
    schedule that shifts by it. ``base_scheduler`` may be a diffusers
    scheduler (wrapped by :func:`accdiffusion.models.noise.schedule_for`)."""
    base_scheduler = schedule_for(base_scheduler)
    sched = fresh_copy(base_scheduler)
    sched.set_timesteps(schedule.steps, device=device, tokens=tokens)
    noiser = fresh_copy(base_scheduler)
    noiser.set_timesteps(schedule.steps, device=device, tokens=tokens)
    if schedule.start:
        sched.set_begin_index(schedule.start)
    return sched, noiser, sched.timesteps[schedule.start:]


def plan_patch(plan: Plan) -> int:
    """The patch size a plan's views are tokenized with (1: a UNet's)."""
    return 1


def schedule_request(settings: Settings, plan: Plan, base_scheduler: Any, tokens: Optional[int] = None
                     ) -> ScheduleRequest:
    """The schedule stage's question for ``plan``'s upscaling phases
    (``tokens``: one view's sequence length, for a flow schedule that shifts by it)."""
    base_scheduler = schedule_for(base_scheduler)
    tokens = view_tokens(plan.latent_sizes[0], plan_patch(plan))

    def timesteps(n: int) -> tuple[int, ...]:
        sched = fresh_copy(base_scheduler)
        sched.set_timesteps(int(n), tokens=tokens)
        return tuple(int(t) for t in sched.timesteps)

    return schedule_request_for(settings, plan, timesteps, int(base_scheduler.config.num_train_timesteps))


def schedule_request_for(settings: Settings, plan: Plan, timesteps: Callable[[int], tuple[int, ...]],
                         num_train_timesteps: int = 1000) -> ScheduleRequest:
    """A :class:`ScheduleRequest` from a plan and a ``timesteps(n)`` function."""
    return ScheduleRequest(scales=tuple(plan.scales[1:]), latent_sizes=tuple(plan.latent_sizes[1:]),
                           steps=settings.steps, factor=plan.factor, num_train_timesteps=num_train_timesteps,
                           scheduler=settings.scheduler, timesteps=timesteps)
