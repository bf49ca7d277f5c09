"""The view executor: the one way the sampler reaches the denoiser (a UNet, a transformer).

A *view* is one native-size latent the denoiser denoises: a local window, a
dilated sample, or phase 1's whole latent. The executor owns everything
between the sampler's views and ``adapter.predict``:

* the text conditioning of a phase: each distinct prompt is encoded once
  (:meth:`ViewExecutor.conditioning`);
* guidance, in the adapter's declared mode (``adapter.guidance``): with
  ``"cfg"``, views whose guidance scale is above 1 are evaluated with the
  unconditional row too, and guided; with ``"embedded"`` (a model that takes
  the scale as an input, e.g. FLUX.1-dev) each view is one row and
  ``predict`` gets every row's scale as ``guidance=``;
* batching: the views of one step, from any number of :class:`ViewGroup` s
  (local windows and dilated samples together), go to the UNet in chunks of
  ``batch_size`` views;
* caches of each chunk's conditioning rows, for groups that say their rows do
  not change between steps;
* the count of UNet evaluations (one sample through the UNet; the two CFG
  halves count as two), per phase.

Another executor (several processes, another device) implements the same
:meth:`evaluate` and plugs into :class:`accdiffusion.sampler.Sampler`.
"""

from __future__ import annotations

from typing import Any, Hashable, Optional, Sequence

import attrs
import torch

from .types import Conditioning, ControlViews


@attrs.frozen
class ViewGroup:
    """Views of one kind at one step, with their conditioning.

    ``latents``: ``(N, C, h, w)``, not yet scaled by the scheduler; ``cond``:
    ``N`` conditioning rows; ``guidance_scale``: CFG scale (no CFG at or
    below 1); ``positions``: ``(N, 2)`` integer (top, left) of each view on
    the canvas in latent pixels, or ``None`` for whole-canvas views (the
    adapter turns them into what its family needs: SDXL's crop coordinates);
    ``key``: a hashable name under which the executor may keep this group's
    conditioning between steps (``None``: not cached). The same key must
    always come with the same rows and positions.
    ``control``: per-view extra conditioning from a structure guidance
    (:class:`~accdiffusion.types.ControlViews`, one control image per view)
    or ``None``; the control images are not part of the cached rows.
    """

    latents: torch.Tensor = attrs.field(eq=False)
    cond: Conditioning = attrs.field(eq=False)
    guidance_scale: float
    positions: Optional[torch.Tensor] = attrs.field(default=None, eq=False)
    key: Optional[Hashable] = None
    control: Optional[ControlViews] = attrs.field(default=None, eq=False)

    def __len__(self) -> int:
        return int(self.latents.shape[0])


def cat_conditioning(parts: Sequence[Conditioning]) -> Conditioning:
    """Rows of ``parts`` stacked in order."""
    if len(parts) == 1:
        return parts[0]
    pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
    return Conditioning(torch.cat([p.embeds for p in parts]), pooled)


def slice_conditioning(c: Conditioning, sl: slice) -> Conditioning:
    return Conditioning(c.embeds[sl], None if c.pooled is None else c.pooled[sl])


def repeat_conditioning(c: Conditioning, n: int) -> Conditioning:
    """The single row of ``c`` repeated ``n`` times (a view, no copy)."""
    return Conditioning(c.embeds.expand(n, *c.embeds.shape[1:]),
                        None if c.pooled is None else c.pooled.expand(n, *c.pooled.shape[1:]))


def guidance_mode(adapter: Any) -> str:
    """The adapter's declared guidance mode: ``"cfg"`` unless it declares ``"embedded"``."""
    return "embedded" if getattr(adapter, "guidance", "cfg") == "embedded" else "cfg"


class ViewExecutor:
    """Evaluates batches of views on one model adapter, in one process.

    ``uncond`` is the run's unconditional row; ``target`` the final image
    size (SDXL micro-conditioning); ``batch_size`` the most views per UNet
    call (each view counts once, its CFG half rides along).
    """

    def __init__(self, adapter: Any, uncond: Conditioning, target: tuple[int, int], batch_size: int,
                 known: Optional[dict[str, Conditioning]] = None) -> None:
        self.adapter = adapter
        self.uncond = uncond
        self.target = target
        self.batch_size = int(batch_size)
        self._rows: dict[str, Conditioning] = dict(known or {})
        self._cache: dict[Hashable, tuple[Conditioning, Optional[torch.Tensor]]] = {}
        #: UNet evaluations so far (samples through the UNet, CFG halves counted separately).
        self.evaluations = 0

    # -- text -----------------------------------------------------------------

    def conditioning(self, prompts: Sequence[str]) -> Conditioning:
        """One row per prompt; each distinct prompt is encoded once per executor."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._rows]
        if missing:
            enc = self.adapter.encode_prompts(missing)
            for k, p in enumerate(missing):
                self._rows[p] = slice_conditioning(enc, slice(k, k + 1))
        return cat_conditioning([self._rows[p] for p in prompts])

    def forget_cached_batches(self) -> None:
        """Drop the conditioning kept for cached groups (call when keys may be reused with new rows)."""
        self._cache.clear()

    # -- the UNet ---------------------------------------------------------------

    def evaluate(self, scheduler: Any, timestep: Any, groups: Sequence[ViewGroup]) -> list[torch.Tensor]:
        """Guided model outputs for every group, in ``batch_size`` chunks across groups.

        Returns one ``(N_g, C, h, w)`` float32 tensor per group. Views of a
        chunk are scaled by ``scheduler.scale_model_input`` with ``timestep``
        (``scheduler``: the phase's noise schedule, :mod:`accdiffusion.models.noise`).
        """
        groups = [g for g in groups]
        sizes = [len(g) for g in groups]
        if not groups or sum(sizes) == 0:
            return [g.latents[:0] for g in groups]
        shapes = {tuple(g.latents.shape[1:]) for g in groups if len(g)}
        if len(shapes) > 1:  # views of different sizes cannot share a batch
            return [out for g in groups for out in self.evaluate(scheduler, timestep, [g])]
        latents = groups[0].latents if len(groups) == 1 else torch.cat([g.latents for g in groups])
        # (group index, first view, end) segments of each chunk
        bounds = []
        offset = 0
        for gi, n in enumerate(sizes):
            bounds.append((gi, offset, offset + n))
            offset += n
        chunks = []
        for start in range(0, offset, self.batch_size):
            stop = min(start + self.batch_size, offset)
            segments = [(gi, max(a, start) - a, min(b, stop) - a) for gi, a, b in bounds if a < stop and b > start]
            chunks.append((start, stop, [(groups[gi], lo, hi) for gi, lo, hi in segments]))
        outs = self._run_chunks(scheduler, timestep, latents, chunks)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return list(out.split(sizes))

    def _run_chunks(self, scheduler: Any, timestep: Any, latents: torch.Tensor,
                    chunks: list[tuple[int, int, list[tuple[ViewGroup, int, int]]]]) -> list[torch.Tensor]:
        """The guided outputs of each chunk ``(start, stop, segments)`` of
        ``latents``, in order: one :meth:`_chunk` call each. An executor of
        several processes overrides this to evaluate a share of the chunks."""
        return [self._chunk(scheduler.scale_model_input(latents[start:stop], timestep), timestep, segments)
                for start, stop, segments in chunks]

    def _chunk(self, x: torch.Tensor, timestep: Any, segments: list[tuple[ViewGroup, int, int]]) -> torch.Tensor:
        """One denoiser call for a chunk made of ``segments`` (group, lo, hi)."""
        embedded = guidance_mode(self.adapter) == "embedded"
        cfg = [g.guidance_scale > 1.0 and not embedded for g, _, _ in segments]
        key = None
        if all(g.key is not None for g, _, _ in segments):
            key = tuple((g.key, lo, hi, c) for (g, lo, hi), c in zip(segments, cfg))
        if key is not None and key in self._cache:
            cond, crops = self._cache[key]
        else:
            rows = [slice_conditioning(g.cond, slice(lo, hi)) for g, lo, hi in segments]
            any_crops = any(g.positions is not None for g, _, _ in segments)
            crop_rows = None
            if any_crops:
                crop_rows = [g.positions[lo:hi] if g.positions is not None
                             else torch.zeros(hi - lo, 2, dtype=torch.long) for g, lo, hi in segments]
            uncond_rows = [repeat_conditioning(self.uncond, hi - lo)
                           for (g, lo, hi), c in zip(segments, cfg) if c]
            cond = cat_conditioning(uncond_rows + rows)
            crops = None
            if crop_rows is not None:
                uncrops = [cr for cr, c in zip(crop_rows, cfg) if c]
                crops = torch.cat(uncrops + crop_rows)
            if key is not None:
                self._cache[key] = (cond, crops)
        if any(cfg):
            unc_x = [x[a:b] for a, b, c in self._offsets(segments, cfg) if c]
            x = torch.cat(unc_x + [x])  # unconditional rows of the CFG views first, then every view
        self.evaluations += int(x.shape[0])
        extra: dict[str, Any] = {}
        if embedded:
            extra["guidance"] = torch.cat([torch.full((hi - lo,), float(g.guidance_scale)) for g, lo, hi in segments])
        if any(g.control is not None for g, _, _ in segments):
            down, mid = self._control_residuals(x, timestep, cond, crops, segments, cfg)
            out = self.adapter.predict(x, timestep, cond, crops, self.target, down_block_additional_residuals=down,
                                       mid_block_additional_residual=mid, **extra)
        else:
            out = self.adapter.predict(x, timestep, cond, crops, self.target, **extra)
        if not any(cfg):
            return out
        n_unc = out.shape[0] - sum(hi - lo for _, lo, hi in segments)
        u_all, c_all = out[:n_unc], out[n_unc:]
        if all(cfg) and len({g.guidance_scale for g, _, _ in segments}) == 1:
            scale = segments[0][0].guidance_scale
            return u_all + scale * (c_all - u_all)
        guided = []
        u_at = 0
        for (a, b, c), (g, _, _) in zip(self._offsets(segments, cfg), segments):
            co = c_all[a:b]
            if c:
                u = u_all[u_at:u_at + (b - a)]
                u_at += b - a
                co = u + g.guidance_scale * (co - u)
            guided.append(co)
        return torch.cat(guided)

    def _control_residuals(self, x: torch.Tensor, timestep: Any, cond: Conditioning, crops: Optional[torch.Tensor],
                           segments: list[tuple[ViewGroup, int, int]], cfg: list[bool]
                           ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """ControlNet residuals for the rows of a chunk's UNet batch ``x``
        (unconditional rows first, as built by :meth:`_chunk`): each row with
        control gets its model's residuals (both CFG halves see the same
        control image), a row without control gets zeros, so it is denoised
        exactly as without a ControlNet."""
        rows = [(g, k) for (g, lo, hi), c in zip(segments, cfg) if c for k in range(lo, hi)]
        rows += [(g, k) for g, lo, hi in segments for k in range(lo, hi)]
        parts: dict[tuple[int, float], list[int]] = {}
        for r, (g, _) in enumerate(rows):
            if g.control is not None:
                parts.setdefault((id(g.control.model), float(g.control.scale)), []).append(r)
        down: Optional[list[torch.Tensor]] = None
        mid: Optional[torch.Tensor] = None
        for idx in parts.values():
            first = rows[idx[0]][0].control
            images = torch.stack([rows[r][0].control.images[rows[r][1]] for r in idx])
            at = torch.tensor(idx)
            part_cond = Conditioning(cond.embeds[at], None if cond.pooled is None else cond.pooled[at])
            d, m = self.adapter.control_residuals(first.model, x[at], timestep, part_cond,
                                                  None if crops is None else crops[at], self.target, images,
                                                  first.scale)
            if len(idx) == len(rows):
                return list(d), m
            if down is None:
                down = [torch.zeros((len(rows), *t.shape[1:]), dtype=t.dtype, device=t.device) for t in d]
                mid = torch.zeros((len(rows), *m.shape[1:]), dtype=m.dtype, device=m.device)
            dev = at.to(m.device)
            for full, t in zip(down, d):
                full.index_copy_(0, dev, t)
            mid.index_copy_(0, dev, m)
        return down, mid

    @staticmethod
    def _offsets(segments, cfg):
        at = 0
        for (g, lo, hi), c in zip(segments, cfg):
            yield at, at + (hi - lo), c
            at += hi - lo
