"""Phase-1 attention maps (method section 1), for any model family.

A family's capture (``adapter.attention_capture``, e.g.
:mod:`accdiffusion.models.unet_attention` for the UNets) feeds the
conditional branch's text-attention probabilities into an
:class:`AttentionRecorder`, a running sum: memory stays ``O(tokens x text
length)`` however many steps run. :func:`extract_maps` turns the sum into the
prompt's per-word :class:`~accdiffusion.types.AttentionMaps`.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from .types import AttentionMaps


def downsampled_side(side: int, factor: int) -> int:
    """Side length after ``log2(factor)`` stride-2 convolutions (``ceil`` each time)."""
    for _ in range(int(round(math.log2(factor)))):
        side = (side + 1) // 2
    return side


class AttentionRecorder:
    """Running sum of conditional-branch cross-attention probabilities.

    ``cfg`` tells the recording layers whether the batch is ``[uncond, cond]``
    (record the second half) or conditional only (record all of it).
    ``first_token``: the text position of the prompt's first token (1 after
    CLIP's BOS token, 0 for a T5 encoder without one).
    """

    def __init__(self, first_token: int = 1) -> None:
        self.total: Optional[torch.Tensor] = None
        self.count = 0
        self.cfg = True
        self.first_token = int(first_token)

    def add(self, probs: torch.Tensor) -> None:
        """``probs``: ``(batch, heads, tokens, text_len)`` probabilities."""
        mean = probs.float().mean(dim=(0, 1))
        self.total = mean if self.total is None else self.total + mean
        self.count += 1

    def maps(self, height: int, width: int, n_words: int, factor: int, words: tuple[str, ...],
             grid: Optional[tuple[int, int]] = None) -> AttentionMaps:
        """The average map of the prompt's ``n_words`` tokens for a phase-1
        latent of ``height x width``; ``grid``: the map's size (default: the
        side after ``log2(factor)`` stride-2 convolutions), each map pixel
        covering ``factor`` latent pixels."""
        if self.total is None:
            raise RuntimeError("no cross-attention was recorded")
        h_a, w_a = grid or (downsampled_side(height, factor), downsampled_side(width, factor))
        avg = self.total / self.count
        if avg.shape[0] != h_a * w_a:
            raise RuntimeError(f"recorded {avg.shape[0]} tokens, expected {h_a}x{w_a}")
        first = self.first_token
        maps = avg[:, first : first + n_words].reshape(h_a, w_a, n_words)  # row-major (h, w)
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
                 factor: int, grid: Optional[tuple[int, int]] = None) -> AttentionMaps:
    """The phase-1 :class:`AttentionMaps` of ``prompt`` from what ``recorder`` saw
    on a ``height x width`` latent (the sampler's one call after phase 1).

    ``maps``/``words`` are the prompt's whole words (``adapter.word_groups``),
    each with the mean of its tokens' maps (:func:`word_maps`); ``token_maps``,
    ``tokens`` and ``groups`` keep the per-token maps (the release's
    one-word-per-token form, ``AttentionMaps.per_token``). An adapter without
    ``word_groups`` gives one word per token.
    """
    tokens = tuple(adapter.word_tokens(prompt))
    per_token = recorder.maps(height, width, len(tokens), factor, tokens, grid)
    grouping = getattr(adapter, "word_groups", None)
    if grouping is None:
        words, groups = tokens, tuple((k,) for k in range(len(tokens)))
    else:
        words, groups = grouping(prompt)
    return AttentionMaps(maps=word_maps(per_token.maps, groups), words=tuple(words), latent_per_map=factor,
                         token_maps=per_token.maps, tokens=tokens, groups=tuple(tuple(g) for g in groups))


