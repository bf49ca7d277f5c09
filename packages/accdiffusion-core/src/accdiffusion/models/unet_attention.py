"""Cross-attention capture in a UNet (SDXL, SD 1.x / 2.x), method section 1.

Only the cross-attention layers at ``1/factor`` of the latent side in the
UNet's down and up blocks (not mid) record anything; every other layer keeps
its fused attention kernel. A recording layer computes the *conditional*
half's attention probabilities explicitly (the unconditional half still uses
``scaled_dot_product_attention``) and adds their mean over heads to a running
sum: memory stays ``O(tokens x text length)`` however many steps run.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..attention import AttentionRecorder, downsampled_side

_LAYER = re.compile(r"^(down|up)_blocks\.(\d+)\.attentions\.\d+\..*attn2\.processor$")


def spatial_factor(kind: str, block: int, n_blocks: int) -> int:
    """Downsampling factor of down/up block ``block`` in a UNet with ``n_blocks`` levels."""
    return 2 ** block if kind == "down" else 2 ** (n_blocks - 1 - block)


def select_layers(unet: Any, factor: int) -> list[str]:
    """Processor names of the cross-attention layers at ``1/factor`` resolution."""
    n_down = len(unet.config.down_block_types)
    n_up = len(unet.config.up_block_types)
    names = []
    for name in unet.attn_processors:
        m = _LAYER.match(name)
        if not m:
            continue
        kind, block = m.group(1), int(m.group(2))
        if spatial_factor(kind, block, n_down if kind == "down" else n_up) == factor:
            names.append(name)
    return names


class RecordingAttnProcessor:
    """Attention processor that records conditional cross-attention probabilities."""

    def __init__(self, recorder: AttentionRecorder) -> None:
        self.recorder = recorder

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        temb: Optional[torch.Tensor] = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, ch, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context)
        value = attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        q = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        k = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        v = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
        half = batch // 2 if self.recorder.cfg else 0
        outs = []
        if half:
            outs.append(F.scaled_dot_product_attention(q[:half], k[:half], v[:half],
                                                       attn_mask=None if mask is None else mask[:half]))
        scores = torch.matmul(q[half:].float(), k[half:].float().transpose(-1, -2)) * attn.scale
        if mask is not None:
            scores = scores + mask[half:].float()
        probs = scores.softmax(dim=-1)
        self.recorder.add(probs)
        outs.append(torch.matmul(probs.to(v.dtype), v[half:]))
        out = torch.cat(outs).transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, ch, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class AttentionCapture:
    """Installs recording processors on the selected layers and restores the originals.

    Use as a context manager around phase 1::

        with AttentionCapture(unet, factor=4) as capture:
            ...  # sampling
        maps = capture.recorder.maps(*capture.grid(h, w), ...)

    The maps have the side of the latent after ``log2(factor)`` stride-2
    convolutions (:meth:`grid`); each map pixel covers ``factor`` latent pixels.
    """

    def __init__(self, unet: Any, factor: int) -> None:
        self.unet = unet
        self.factor = factor
        self.latent_per_map = factor
        self.recorder = AttentionRecorder()
        self.layers = select_layers(unet, factor)
        if not self.layers:
            raise ValueError(
                f"the UNet has no cross-attention layers at 1/{factor} of the latent side in its down or up "
                f"blocks; choose another attention_factor (powers of 2 up to 2**{len(unet.config.down_block_types) - 1})"
            )
        self._saved: dict[str, Any] = {}

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The attention map's size for a ``height x width`` latent."""
        return downsampled_side(height, self.factor), downsampled_side(width, self.factor)

    def __enter__(self) -> "AttentionCapture":
        processors = self.unet.attn_processors
        self._saved = {name: processors[name] for name in self.layers}
        modules = dict(self.unet.named_modules())
        processor = RecordingAttnProcessor(self.recorder)
        for name in self.layers:
            modules[name[: -len(".processor")]].set_processor(processor)
        return self

    def __exit__(self, *exc: Any) -> None:
        modules = dict(self.unet.named_modules())
        for name, proc in self._saved.items():
            modules[name[: -len(".processor")]].set_processor(proc)
        self._saved = {}
