"""Cross-attention capture during phase 1 (method section 1).

Only the cross-attention layers at ``1/factor`` of the latent side in the
UNet's down and up blocks (not mid) record anything; every other layer keeps
its fused attention kernel. A recording layer computes the *conditional*
half's attention probabilities explicitly (the unconditional half still uses
``scaled_dot_product_attention``) and adds their mean over heads to a running
sum: memory stays ``O(tokens x text length)`` however many steps run.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .types import AttentionMaps

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


def downsampled_side(side: int, factor: int) -> int:
    """Side length after ``log2(factor)`` stride-2 convolutions (``ceil`` each time)."""
    for _ in range(int(round(math.log2(factor)))):
        side = (side + 1) // 2
    return side


class AttentionRecorder:
    """Running sum of conditional-branch cross-attention probabilities.

    ``cfg`` tells the recording layers whether the batch is ``[uncond, cond]``
    (record the second half) or conditional only (record all of it).
    """

    def __init__(self) -> None:
        self.total: Optional[torch.Tensor] = None
        self.count = 0
        self.cfg = True

    def add(self, probs: torch.Tensor) -> None:
        """``probs``: ``(batch, heads, tokens, text_len)`` probabilities."""
        mean = probs.float().mean(dim=(0, 1))
        self.total = mean if self.total is None else self.total + mean
        self.count += 1

    def maps(self, height: int, width: int, n_words: int, factor: int, words: tuple[str, ...]) -> AttentionMaps:
        """The average map of word tokens ``1..n_words`` for a phase-1 latent of ``height x width``."""
        if self.total is None:
            raise RuntimeError("no cross-attention was recorded")
        h_a, w_a = downsampled_side(height, factor), downsampled_side(width, factor)
        avg = self.total / self.count
        if avg.shape[0] != h_a * w_a:
            raise RuntimeError(f"recorded {avg.shape[0]} tokens, expected {h_a}x{w_a}")
        maps = avg[:, 1 : 1 + n_words].reshape(h_a, w_a, n_words)  # row-major (h, w)
        return AttentionMaps(maps=maps.cpu(), words=words, latent_per_map=factor)


def word_maps(token_maps: torch.Tensor, groups: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """One map per word: the mean of its tokens' maps.

    ``token_maps``: ``(h_a, w_a, n_tokens)``; ``groups[j]``: the token
    positions of word ``j``. Returns ``(h_a, w_a, len(groups))``; a one-token
    word's map is its token's map exactly.

    The mean, not the union of the tokens' masks: the masks come from the
    word's map thresholded at its own mean, and a fragment's map (CLIP's text
    encoder is causal, so the early pieces of a split word carry little of
    its meaning) would add its above-mean half wherever it is noisy; averaging
    keeps what the pieces agree on. The word also keeps one map, which the
    pictures and the SAM decomposer (peaks of the map) use as they are.
    """
    h_a, w_a = int(token_maps.shape[0]), int(token_maps.shape[1])
    if not groups:
        return token_maps.new_zeros((h_a, w_a, 0))
    return torch.stack([token_maps[..., list(g)].mean(dim=-1) for g in groups], dim=-1)


def extract_maps(recorder: AttentionRecorder, adapter: Any, prompt: str, height: int, width: int,
                 factor: int) -> AttentionMaps:
    """The phase-1 :class:`AttentionMaps` of ``prompt`` from what ``recorder`` saw
    on a ``height x width`` latent (the sampler's one call after phase 1).

    ``maps``/``words`` are the prompt's whole words (``adapter.word_groups``),
    each with the mean of its tokens' maps (:func:`word_maps`); ``token_maps``,
    ``tokens`` and ``groups`` keep the per-token maps (the release's
    one-word-per-token form, ``AttentionMaps.per_token``). An adapter without
    ``word_groups`` gives one word per token.
    """
    tokens = tuple(adapter.word_tokens(prompt))
    per_token = recorder.maps(height, width, len(tokens), factor, tokens)
    grouping = getattr(adapter, "word_groups", None)
    if grouping is None:
        words, groups = tokens, tuple((k,) for k in range(len(tokens)))
    else:
        words, groups = grouping(prompt)
    return AttentionMaps(maps=word_maps(per_token.maps, groups), words=tuple(words), latent_per_map=factor,
                         token_maps=per_token.maps, tokens=tokens, groups=tuple(tuple(g) for g in groups))


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
        maps = capture.recorder.maps(...)
    """

    def __init__(self, unet: Any, factor: int) -> None:
        self.unet = unet
        self.factor = factor
        self.recorder = AttentionRecorder()
        self.layers = select_layers(unet, factor)
        if not self.layers:
            raise ValueError(
                f"the UNet has no cross-attention layers at 1/{factor} of the latent side in its down or up "
                f"blocks; choose another attention_factor (powers of 2 up to 2**{len(unet.config.down_block_types) - 1})"
            )
        self._saved: dict[str, Any] = {}

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
