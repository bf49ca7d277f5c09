"""Patch-content-aware prompts (AccDiffusion, Lin et al., ECCV 2024, sec. 3.2, eq. 5-8).

AccDiffusion gives each local window only the prompt words whose phase-1
cross-attention highlights enough of the window, instead of the whole prompt,
which stops every window from repeating the prompt's objects. The words are
the prompt's whole words, each with the mean of its tokens' maps (see
``accdiffusion.attention.word_maps``); ``per_token=True`` takes one word per
token instead, as the release does. For word ``j``:

1. binarise its cross-attention map at the map's mean;
2. clean the mask with a morphological opening (3x3 square,
   ``max(h_a, w_a) // 16`` iterations);
3. upsample the mask by the phase's scale ``s``;
4. keep the word for a window iff the mask covers at least the fraction ``c``
   of the window (by default of the *whole* window, the part of a jittered
   border window in the padding counting as unset, as in the release;
   ``border="clipped"`` measures the part inside the canvas instead).

All words and windows are handled at once with tensor operations.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from accdiffusion import AttentionMaps, DecomposeRequest, PatchPrompts, WindowLayout
from accdiffusion.options import option


def binarize(maps: torch.Tensor) -> torch.Tensor:
    """Binary word masks: ``B_j = map_j > mean(map_j)`` (sec. 3.2).

    ``maps``: ``(h_a, w_a, n_words)`` cross-attention maps. Returns a bool
    tensor ``(n_words, h_a, w_a)``.
    """
    per_word = maps.permute(2, 0, 1)
    return per_word > per_word.mean(dim=(1, 2), keepdim=True)


def morphological_open(masks: torch.Tensor, iterations: int) -> torch.Tensor:
    """Morphological opening of binary masks with a 3x3 square, ``iterations`` times (sec. 3.2).

    Erodes ``iterations`` times, then dilates ``iterations`` times, with
    OpenCV's default borders: outside the mask counts as set while eroding and
    as unset while dilating. ``iterations`` passes of a 3x3 square equal one
    pass of a ``(2 iterations + 1)`` square, done with one max-pool each way.
    ``masks``: bool ``(n, h, w)``; returns the opened masks, bool ``(n, h, w)``.
    ``iterations == 0`` returns the masks unchanged.
    """
    if iterations == 0:
        return masks
    size = 2 * iterations + 1
    x = masks.unsqueeze(1).float()
    # max_pool2d pads with -inf, which counts as unset for the dilation and, on
    # the complement, as set for the erosion.
    eroded = 1.0 - F.max_pool2d(1.0 - x, size, stride=1, padding=iterations)
    opened = F.max_pool2d(eroded, size, stride=1, padding=iterations)
    return opened.squeeze(1) > 0.5


def opening_iterations(map_height: int, map_width: int) -> int:
    """The opening's iteration count for an ``h_a x w_a`` map: ``max(h_a, w_a) // 16``.

    2 for 32x32 maps. The release's ``(w, h)`` reshape makes its count
    ``w_a // 16`` in effect; the longer side equals that for square and
    landscape maps and keeps a tall or wide image's masks cleaned (a
    1024x3072 SDXL image has 11x32 maps: 2 iterations, not 0).
    """
    return max(int(map_height), int(map_width)) // 16


def word_masks(attention: AttentionMaps) -> torch.Tensor:
    """Cleaned masks of every word: :func:`binarize`, then :func:`morphological_open`
    with :func:`opening_iterations` of the map. Returns bool ``(n_words, h_a, w_a)``."""
    h_a, w_a = int(attention.maps.shape[0]), int(attention.maps.shape[1])
    return morphological_open(binarize(attention.maps), opening_iterations(h_a, w_a))


def window_map_bounds(layout: WindowLayout, latent_per_map: int, map_height: int, map_width: int) -> torch.Tensor:
    """Each window's extent on the upsampled attention map, ``(K, 4)`` int64 rows
    ``(row0, row1, col0, col1)`` (half-open).

    A window is first clipped to the unpadded canvas ``[0, canvas_height) x
    [0, canvas_width)``; with ``f = latent_per_map`` its rows become
    ``[floor(top / f), ceil(bottom / f))`` and likewise its columns, clipped to
    the ``map_height x map_width`` map.
    """
    boxes = torch.tensor(
        [(w.top, w.bottom, w.left, w.right) for w in layout.on_canvas()], dtype=torch.int64
    ).reshape(-1, 4)
    limits = torch.tensor([layout.canvas_height, layout.canvas_height, layout.canvas_width, layout.canvas_width])
    boxes = torch.minimum(boxes.clamp(min=0), limits)
    f = latent_per_map
    starts = boxes[:, 0::2].div(f, rounding_mode="floor")
    ends = -(-boxes[:, 1::2]).div(f, rounding_mode="floor")
    map_limits = torch.tensor([map_height, map_width])
    starts = torch.minimum(starts, map_limits)
    ends = torch.minimum(ends, map_limits)
    return torch.stack([starts[:, 0], ends[:, 0], starts[:, 1], ends[:, 1]], dim=1)


#: How a border window's word fraction is measured (see :func:`word_window_fractions`).
BORDERS = ("window", "clipped")


def window_map_area(layout: WindowLayout, latent_per_map: int) -> torch.Tensor:
    """Each window's whole area in map pixels, ``(K,)`` int64: its unclipped
    extent ``[floor(top / f), ceil(bottom / f))`` times its columns likewise,
    with ``f = latent_per_map`` (the part in the jitter padding included)."""
    boxes = torch.tensor(
        [(w.top, w.bottom, w.left, w.right) for w in layout.on_canvas()], dtype=torch.int64
    ).reshape(-1, 4)
    f = latent_per_map
    starts = boxes[:, 0::2].div(f, rounding_mode="floor")
    ends = -(-boxes[:, 1::2]).div(f, rounding_mode="floor")
    sides = ends - starts
    return sides[:, 0] * sides[:, 1]


def word_window_fractions(
    masks: torch.Tensor, layout: WindowLayout, scale: int, latent_per_map: int, border: str = "window"
) -> torch.Tensor:
    """Fraction of each window covered by each word's mask (sec. 3.2, eq. 8's ratio).

    ``masks``: bool ``(n_words, h_a, w_a)`` cleaned masks of phase 1. They are
    upsampled (nearest neighbour; the integer factor ``scale`` repeats each
    pixel) to ``(scale h_a, scale w_a)``; each window is mapped onto them with
    :func:`window_map_bounds`, and its mask sums come from one integral image
    of all words. Returns float64 ``(n_words, n_windows)``: the mask sum inside
    the canvas over

    * ``border="window"`` (default, the release's form): the window's whole
      area (:func:`window_map_area`), so the part of a jittered border window
      that lies in the padding counts as unset (the release zero-pads the mask
      by the jitter range and divides by the window's area);
    * ``border="clipped"``: the area of the part inside the canvas.

    The two agree for windows inside the canvas.
    """
    if border not in BORDERS:
        raise ValueError(f"border {border!r} must be one of {', '.join(BORDERS)}")
    resized = masks.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    n_words, map_height, map_width = resized.shape
    integral = F.pad(resized.to(torch.int64).cumsum(1).cumsum(2), (1, 0, 1, 0))
    bounds = window_map_bounds(layout, latent_per_map, map_height, map_width).to(masks.device)
    r0, r1, c0, c1 = bounds.unbind(1)
    sums = integral[:, r1, c1] - integral[:, r0, c1] - integral[:, r1, c0] + integral[:, r0, c0]
    if border == "window":
        area = window_map_area(layout, latent_per_map).to(masks.device).clamp(min=1)
    else:
        area = ((r1 - r0) * (c1 - c0)).clamp(min=1)
    return sums.to(torch.float64) / area.to(torch.float64)


def masks_to_prompts(masks: torch.Tensor, words: tuple[str, ...], layout: WindowLayout, scale: int,
                     latent_per_map: int, threshold: float, border: str = "window") -> PatchPrompts:
    """The patch-prompt rule (eq. 8) shared by every mask-based decomposer:
    window ``k`` keeps word ``j`` iff ``masks[j]`` covers at least
    ``threshold`` of it (:func:`word_window_fractions` with ``border``); the
    kept words, in prompt order, joined by single spaces (possibly empty).
    ``masks``: bool ``(len(words), h_a, w_a)``."""
    if masks.shape[0] != len(words):
        raise ValueError(f"{masks.shape[0]} masks for {len(words)} words")
    fractions = word_window_fractions(masks, layout, scale, latent_per_map, border)
    return keep_to_prompts(fractions >= threshold, words)


def keep_to_prompts(keep: torch.Tensor, words: tuple[str, ...]) -> PatchPrompts:
    """One prompt per window from bool ``keep`` ``(len(words), n_windows)``:
    the kept words, in prompt order, joined by single spaces (possibly empty)."""
    kept = tuple(tuple(word for word, k in zip(words, row) if k) for row in keep.T.tolist())
    return PatchPrompts(tuple(" ".join(w) for w in kept), kept)


@attrs.frozen
class MaskDecomposer:
    """Base of the decomposers that give words to windows through one mask per
    word (``cross_attention``, ``sam``): subclasses say where the masks come
    from (:meth:`request_masks`); the rule from masks to prompts is
    :meth:`masks_prompts`, by default :func:`masks_to_prompts` with the
    options ``threshold`` (the paper's ``c``) and ``border``.

    Without attention maps, or with no words (an empty prompt), every window
    gets ``request.prompt``.
    """

    needs_attention = True
    fixed_windows = True

    threshold: float = option(0.3, minimum=0.0, maximum=1.0, aliases=("c",),
                              help="a word joins a window when its mask covers this share of it (the paper's c, eq. 8)")
    border: str = option("window", choices=BORDERS,
                         help="a border window's share over the whole window, the part in the jitter padding "
                              "counting as unset (window, the release), or over its part on the canvas (clipped)")

    def attention(self, attention: AttentionMaps) -> AttentionMaps:
        """The maps whose words this decomposer selects from (``attention`` itself)."""
        return attention

    def request_masks(self, attention: AttentionMaps, request: DecomposeRequest) -> torch.Tensor:
        """Bool ``(n_words, h_a, w_a)`` masks of ``attention``'s words for ``request``."""
        return word_masks(attention)

    def word_masks(self, attention: AttentionMaps) -> torch.Tensor:
        """The cleaned binary mask of every word, ``(n, h_a, w_a)`` (for pictures)."""
        return word_masks(self.attention(attention))

    def masks_prompts(self, masks: torch.Tensor, words: tuple[str, ...], request: DecomposeRequest,
                      latent_per_map: int) -> PatchPrompts:
        """One prompt per window from the words' masks (the paper's rule, :func:`masks_to_prompts`)."""
        return masks_to_prompts(masks, words, request.layout, request.scale, latent_per_map, self.threshold,
                                self.border)

    def decompose(self, request: DecomposeRequest) -> PatchPrompts:
        """One prompt per window by :meth:`masks_prompts`."""
        attention = request.attention
        if attention is not None:
            attention = self.attention(attention)
        if attention is None or not attention.words:
            return PatchPrompts((request.prompt,) * len(request.layout))
        if attention.maps.shape[-1] != len(attention.words):
            raise ValueError(f"{attention.maps.shape[-1]} attention maps for {len(attention.words)} words")
        return self.masks_prompts(self.request_masks(attention, request), attention.words, request,
                                  attention.latent_per_map)


@attrs.frozen
class CrossAttentionDecomposer(MaskDecomposer):
    """The ``cross_attention`` decomposer: AccDiffusion's patch-content-aware prompts (eq. 5-8).

    Each word's mask is its phase-1 cross-attention map, binarised and opened
    (:func:`word_masks`). ``threshold``: the paper's ``c``. ``border``: see
    :func:`word_window_fractions`. ``per_token``: one "word" per token, each
    decoded on its own, with its own map (the release's behaviour, for
    parity: a word split into several tokens reaches the patch prompts as
    its pieces, a non-ASCII character as U+FFFD pieces); by default the
    words are whole (``AttentionMaps.words``).
    """

    per_token: bool = option(False, help="one word per token, as the release (default: whole words)")

    def attention(self, attention: AttentionMaps) -> AttentionMaps:
        """``attention`` itself (whole words) or, with ``per_token``, ``attention.per_token()``."""
        return attention.per_token() if self.per_token else attention


@attrs.frozen
class IdenticalDecomposer:
    """The ``identical`` decomposer: the whole prompt for every window (MultiDiffusion, DemoFusion)."""

    needs_attention = False
    fixed_windows = False

    def decompose(self, request: DecomposeRequest) -> PatchPrompts:
        """``request.prompt`` for every window of ``request.layout``."""
        return PatchPrompts((request.prompt,) * len(request.layout))

    def word_masks(self, attention: AttentionMaps) -> None:
        """Nothing to show: the words are not placed."""
        return None
