"""The stage driver: AccDiffusion / DemoFusion sampling (method sections 1-4).

:class:`Sampler` owns nothing but the four stage objects and a model adapter;
it runs phase 1 (with cross-attention capture when the prompt decomposer
needs it), then one upscaling phase per scale: upscale, noise inversion, and
per step the skip residual, the local path (windows with their own prompts),
the global path, the cosine fusion and **one scheduler step on the fused
model output** (section 4), then renormalisation to phase 1's statistics.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import time
from typing import Any, Callable, Optional, Sequence, Union

import attrs
import torch
import torch.nn.functional as F
from PIL import Image

from .adapters import ModelAdapter
from .attention import AttentionCapture, extract_maps
from .errors import PluginError, SettingsError
from .plugins import PluginHost
from .schedulers import fresh_copy, make_scheduler
from .settings import Plan, Settings, plan_sizes
from .stages import STAGES
from .types import (
    AttentionMaps,
    Conditioning,
    DecomposeRequest,
    GuidanceRequest,
    PatchPrompts,
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
    """What one phase did: its scale, latent size, windows and patch prompts, time."""

    scale: int
    latent_size: tuple[int, int]
    seconds: float
    layout: Optional[WindowLayout] = None
    patch_prompts: Optional[PatchPrompts] = None


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


def scheduler_step(scheduler: Any, output: torch.Tensor, t: Any, z: torch.Tensor,
                   generator: Optional[torch.Generator]) -> torch.Tensor:
    """One scheduler step, passing the run's generator to schedulers that draw noise."""
    if "generator" in inspect.signature(scheduler.step).parameters:
        return scheduler.step(output, t, z, generator=generator, return_dict=False)[0]
    return scheduler.step(output, t, z, return_dict=False)[0]


def _cat_conditioning(a: Conditioning, b: Conditioning) -> Conditioning:
    pooled = None if a.pooled is None else torch.cat([a.pooled, b.pooled])
    return Conditioning(torch.cat([a.embeds, b.embeds]), pooled)


def _slice_conditioning(c: Conditioning, sl: slice) -> Conditioning:
    return Conditioning(c.embeds[sl], None if c.pooled is None else c.pooled[sl])


def _repeat_conditioning(c: Conditioning, n: int) -> Conditioning:
    return Conditioning(c.embeds.expand(n, *c.embeds.shape[1:]),
                        None if c.pooled is None else c.pooled.expand(n, *c.pooled.shape[1:]))


class _PromptBank:
    """Text embeddings of one phase: each distinct prompt is encoded once."""

    def __init__(self, adapter: ModelAdapter, known: dict[str, Conditioning]) -> None:
        self.adapter = adapter
        self.rows: dict[str, Conditioning] = dict(known)

    def conditioning(self, prompts: Sequence[str]) -> Conditioning:
        missing = [p for p in dict.fromkeys(prompts) if p not in self.rows]
        if missing:
            enc = self.adapter.encode_prompts(missing)
            for k, p in enumerate(missing):
                self.rows[p] = _slice_conditioning(enc, slice(k, k + 1))
        rows = [self.rows[p] for p in prompts]
        embeds = torch.cat([r.embeds for r in rows])
        pooled = None if rows[0].pooled is None else torch.cat([r.pooled for r in rows])
        return Conditioning(embeds, pooled)


class Sampler:
    """Runs AccDiffusion with four stage objects on one model adapter.

    Build it with :meth:`from_pipeline` to resolve stage names through the
    plugin host, or pass stage objects directly::

        sampler = Sampler(adapter, prompt_decomposer=..., tiler=..., global_guidance=None, upscaler=...)
        result = sampler(Settings(prompt="a cat", height=2048, width=2048, seed=1))

    ``global_guidance=None`` switches the global path off (MultiDiffusion with
    skip residual).
    """

    def __init__(self, adapter: ModelAdapter, *, prompt_decomposer: Any, tiler: Any, global_guidance: Any,
                 upscaler: Any, stage_names: Optional[dict[str, str]] = None) -> None:
        self.adapter = adapter
        self.prompt_decomposer = prompt_decomposer
        self.tiler = tiler
        self.global_guidance = global_guidance
        self.upscaler = upscaler
        self.stage_names = stage_names or {
            stage: ("none" if obj is None else type(obj).__name__)
            for stage, obj in zip(STAGES, (prompt_decomposer, tiler, global_guidance, upscaler))
        }

    @classmethod
    def from_pipeline(cls, pipeline: Any, settings: Settings, *, host: Optional[PluginHost] = None,
                      **stages: Any) -> "Sampler":
        """Adapter and stages for ``pipeline``: each stage is the object given in
        ``stages`` or the plugin named in ``settings``."""
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise PluginError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}")
        host = host or PluginHost()
        objs, names = {}, {}
        for stage in STAGES:
            chosen = stages.get(stage, getattr(settings, stage))
            objs[stage] = host.create(stage, chosen, settings)
            names[stage] = chosen if isinstance(chosen, str) else f"<{type(chosen).__name__}>"
        return cls(host.adapt(pipeline, settings), stage_names=names, **objs)

    # -- the UNet on a batch of views ----------------------------------------

    def _denoise(self, scheduler: Any, latents: torch.Tensor, t: Any, guidance: float, cond: Conditioning,
                 uncond: Conditioning, crops: Optional[torch.Tensor], target: tuple[int, int],
                 batch: int, cache: Optional[dict] = None) -> torch.Tensor:
        """Guided model outputs for ``latents`` (one conditioning row each), in batches.

        ``cache`` keeps each batch's guidance conditioning between steps; pass
        a dict that lives as long as ``cond`` and ``crops`` do not change.
        """
        do_cfg = guidance > 1.0
        outs = []
        for start in range(0, latents.shape[0], batch):
            sl = slice(start, start + batch)
            x = scheduler.scale_model_input(latents[sl], t)
            n = x.shape[0]
            key = (start, n, do_cfg)
            if cache is not None and key in cache:
                c, cr = cache[key]
            else:
                c = _slice_conditioning(cond, sl)
                cr = None if crops is None else crops[sl]
                if do_cfg:
                    c = _cat_conditioning(_repeat_conditioning(uncond, n), c)
                    cr = None if cr is None else torch.cat([cr, cr])
                if cache is not None:
                    cache[key] = (c, cr)
            if do_cfg:
                x = torch.cat([x, x])
            out = self.adapter.predict(x, t, c, cr, target)
            if do_cfg:
                u, co = out.chunk(2)
                out = u + guidance * (co - u)
            outs.append(out)
        return torch.cat(outs)

    def _local(self, scheduler: Any, z: torch.Tensor, t: Any, layout: WindowLayout, cond: Conditioning,
               uncond: Conditioning, settings: Settings, target: tuple[int, int], cache: dict) -> torch.Tensor:
        """MultiDiffusion: every window's guided output, averaged where windows overlap.

        ``cache`` holds what depends only on the layout and its prompts (the
        overlap count, crop coordinates, guidance conditioning); it must be
        a fresh dict whenever they change.
        """
        p = layout.pad
        zp = F.pad(z, (p, p, p, p)) if p else z
        views = torch.cat([zp[:, :, w.top:w.bottom, w.left:w.right] for w in layout.windows])
        if "count" not in cache:
            vsf = self.adapter.vae_scale_factor
            count = torch.zeros((1, 1, *zp.shape[-2:]), dtype=zp.dtype, device=zp.device)
            for w in layout.windows:
                count[:, :, w.top:w.bottom, w.left:w.right] += 1
            cache["count"] = count.clamp(min=1)
            cache["crops"] = torch.tensor([[w.top * vsf, w.left * vsf] for w in layout.windows])
            cache["cfg"] = {}
        out = self._denoise(scheduler, views, t, settings.multi_guidance_scale, cond, uncond, cache["crops"],
                            target, settings.view_batch_size, cache["cfg"])
        total = torch.zeros_like(zp)
        for k, w in enumerate(layout.windows):
            total[:, :, w.top:w.bottom, w.left:w.right] += out[k : k + 1]
        fused = total / cache["count"]
        h, wd = z.shape[-2:]
        return fused[:, :, p : p + h, p : p + wd]

    # -- a run ----------------------------------------------------------------

    def __call__(self, settings: Settings, *, image: Optional[Image.Image] = None,
                 progress: Optional[ProgressFactory] = None) -> Result:
        """Generate (or, with ``image``, upscale) according to ``settings``."""
        with torch.inference_mode():
            return self._run(settings, image, progress or (lambda desc, total: _NoProgress()))

    def _run(self, settings: Settings, init_image: Optional[Image.Image], progress: ProgressFactory) -> Result:
        a = self.adapter
        if not settings.local_path and self.global_guidance is None:
            raise SettingsError("local_path=False with global_guidance='none' leaves nothing to sample: "
                                "keep the local path or choose a global guidance")
        plan = plan_sizes(settings, a.native_size, a.vae_scale_factor)
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(7), "big")
        gen = torch.Generator("cpu").manual_seed(seed)
        device = a.device
        warnings: list[str] = []
        if a.prompt_token_count(settings.prompt) > a.tokenizer.model_max_length:
            warnings.append(f"prompt is longer than the text encoder's {a.tokenizer.model_max_length} tokens; "
                            "the rest is ignored")
        target = (plan.height, plan.width)
        base = make_scheduler(settings.scheduler, a.pipeline.scheduler)
        T = int(base.config.num_train_timesteps)
        cond_full = a.encode_prompts([settings.prompt])
        uncond = a.encode_negative(settings.prompt, settings.negative_prompt)
        needs_attention = bool(getattr(self.prompt_decomposer, "needs_attention", False)) and plan.factor > 1
        phases: list[PhaseInfo] = []
        stage_images: list[tuple[int, Image.Image]] = []
        attention: Optional[AttentionMaps] = None
        h1, w1 = plan.latent_sizes[0]

        # -- phase 1 ------------------------------------------------------------
        t0 = time.perf_counter()
        capture = AttentionCapture(a.unet, settings.attention_factor) if needs_attention else contextlib.nullcontext()
        with capture:
            if needs_attention:
                capture.recorder.cfg = settings.guidance_scale > 1.0
            sched = fresh_copy(base)
            sched.set_timesteps(settings.steps, device=device)
            timesteps = sched.timesteps
            if init_image is None:
                z = torch.randn((1, a.latent_channels, h1, w1), generator=gen).to(device) * sched.init_noise_sigma
            else:
                x = from_image(init_image, (h1 * a.vae_scale_factor, w1 * a.vae_scale_factor))
                encoded = a.encode_images(x, gen).to(device)
                start = len(timesteps) - max(1, round(len(timesteps) * settings.attention_strength))
                timesteps = timesteps[start:] if needs_attention else timesteps[:0]
                if len(timesteps):
                    noise = torch.randn(encoded.shape, generator=gen).to(device)
                    z = sched.add_noise(encoded, noise, timesteps[:1])
                    if hasattr(sched, "set_begin_index"):
                        sched.set_begin_index(start)
            bar = progress("phase 1" + (" (image)" if init_image is not None else ""), len(timesteps))
            for t in timesteps:
                out = self._denoise(sched, z, t, settings.guidance_scale, cond_full, uncond, None, target, 1)
                z = scheduler_step(sched, out, t, z, gen)
                bar.update()
            bar.close()
            if init_image is not None:
                z = encoded
        if needs_attention:
            attention = extract_maps(capture.recorder, a, settings.prompt, h1, w1, settings.attention_factor)
        anchor_mean, anchor_std = z.mean(), z.std()
        phases.append(PhaseInfo(1, (h1, w1), time.perf_counter() - t0))
        low_res: dict[str, Image.Image] = {}

        def low_res_image() -> Image.Image:
            if "image" not in low_res:
                low_res["image"] = to_image(a.decode_latents(z_phase1))
            return low_res["image"]

        z_phase1 = z
        if settings.save_stages and plan.factor > 1:
            stage_images.append((1, low_res_image()))

        # -- upscaling phases -------------------------------------------------
        bank = _PromptBank(a, {settings.prompt: cond_full})
        fixed = bool(getattr(self.prompt_decomposer, "fixed_windows",
                             getattr(self.prompt_decomposer, "needs_attention", False)))
        for s, size in zip(plan.scales[1:], plan.latent_sizes[1:]):
            t0 = time.perf_counter()
            z_up = self.upscaler.upscale(z, size, a).to(device)
            sched = fresh_copy(base)
            sched.set_timesteps(settings.steps, device=device)
            noiser = fresh_copy(base)
            noiser.set_timesteps(settings.steps, device=device)
            noise = torch.randn(z_up.shape, generator=gen).to(device)

            def decompose(layout: WindowLayout) -> tuple[PatchPrompts, Conditioning]:
                prompts = self.prompt_decomposer.decompose(DecomposeRequest(
                    prompt=settings.prompt, layout=layout, scale=s, attention=attention,
                    low_res_image=low_res_image))
                if len(prompts.prompts) != len(layout.windows):
                    raise PluginError(f"prompt decomposer returned {len(prompts.prompts)} prompts "
                                      f"for {len(layout.windows)} windows")
                return prompts, bank.conditioning(prompts.prompts)

            layout = patch = window_cond = None
            local_cache: dict = {}
            global_cache: dict = {}
            if settings.local_path:
                layout = self.tiler.layout(size[0], size[1], plan.window, plan.stride, gen if settings.jitter else None)
                patch, window_cond = decompose(layout)
            first = layout, patch
            z = noiser.add_noise(z_up, noise, sched.timesteps[:1])
            bar = progress(f"phase {s}/{plan.factor} ({size[1] * a.vae_scale_factor}x{size[0] * a.vae_scale_factor})",
                           len(sched.timesteps))
            for i, t in enumerate(sched.timesteps):
                cos_f = cosine_factor(float(t), T)
                if settings.skip_residual:
                    c1 = cos_f ** settings.cosine_scale_1
                    z = (1 - c1) * z + c1 * noiser.add_noise(z_up, noise, t.reshape(1))
                local = glob = None
                if settings.local_path:
                    if not fixed and i > 0:
                        layout = self.tiler.layout(size[0], size[1], plan.window, plan.stride,
                                                   gen if settings.jitter else None)
                        patch, window_cond = decompose(layout)
                        local_cache = {}
                    local = self._local(sched, z, t, layout, window_cond, uncond, settings, target, local_cache)
                if self.global_guidance is not None:

                    def denoise(req: ViewBatchRequest, t=t, sched=sched) -> torch.Tensor:
                        n = req.latents.shape[0]
                        crops = None if req.crops_top_left is None else torch.tensor(req.crops_top_left)
                        if req.prompts is None and crops is None:
                            cache = global_cache.setdefault(n, {})
                            rows = _repeat_conditioning(cond_full, n)
                        else:  # views with their own prompts or crops: nothing to reuse
                            cache = None
                            rows = (_repeat_conditioning(cond_full, n) if req.prompts is None
                                    else bank.conditioning(req.prompts))
                        return self._denoise(sched, req.latents, t, req.guidance_scale, rows, uncond, crops,
                                             target, settings.view_batch_size, cache)

                    glob = self.global_guidance.predict(GuidanceRequest(
                        latents=z, scale=s, timestep=float(t), step_index=i, cosine_factor=cos_f,
                        guidance_scale=settings.guidance_scale, denoise=denoise, generator=gen))
                if local is not None and glob is not None:
                    c2 = cos_f ** settings.cosine_scale_2
                    out = (1 - c2) * local + c2 * glob
                else:
                    out = local if local is not None else glob
                z = scheduler_step(sched, out, t, z, gen)
                bar.update()
            bar.close()
            z = renormalize(z, anchor_mean, anchor_std)
            phases.append(PhaseInfo(s, size, time.perf_counter() - t0, *first))
            if settings.save_stages and s != plan.factor:
                stage_images.append((s, to_image(a.decode_latents(z))))

        t0 = time.perf_counter()
        bar = progress("decode", 1)
        image = to_image(a.decode_latents(z))
        bar.update()
        bar.close()
        if settings.save_stages:
            stage_images.append((plan.factor, image))
        return Result(image=image, latents=z.cpu(), seed=seed, plan=plan, phases=tuple(phases),
                      attention=attention, stage_images=tuple(stage_images), warnings=tuple(warnings),
                      prompt_decomposer=self.prompt_decomposer)
