"""Patch-content-aware prompts from Segment Anything masks (AccDiffusion, sec. 3.2, with SAM masks).

The ``cross_attention`` decomposer binarises each word's phase-1
cross-attention map and cleans it with an opening. Here the map only says
*where* the word is: its peak(s) become point prompts for Segment Anything on
the phase-1 image, and SAM's mask, pooled to the attention-map grid, replaces
the binarised map. The per-window rule (a word is kept for a window iff its
mask covers at least the fraction ``c`` of it) and the prompt composition are
those of ``cross_attention``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from accdiffusion import AttentionMaps, DecomposeRequest, PatchPrompts
from accdiffusion.options import option
from accdiffusion_prompts import masks_to_prompts, word_masks
from PIL import Image

from .segmenter import DEFAULT_MODEL, Point, SamSegmenter, Segmenter


def word_peaks(maps: torch.Tensor, count: int) -> list[list[tuple[int, int]]]:
    """Each word's peak cells ``(row, col)``, highest first.

    ``maps``: ``(h_a, w_a, n_words)``. For every word, up to ``count`` cells
    whose value is strictly above the map's mean, in decreasing order of value
    (ties in row-major order), so the first is the argmax. A flat map (every
    cell equal, i.e. max == mean) has no peaks: its list is empty.
    """
    width = int(maps.shape[1])
    per_word = maps.permute(2, 0, 1).flatten(1).to(torch.float64)
    values, order = torch.sort(per_word, dim=1, descending=True, stable=True)
    flat = per_word.amax(1) == per_word.amin(1)
    above = values > per_word.mean(1, keepdim=True)
    peaks = []
    for j in range(per_word.shape[0]):
        cells = [] if flat[j] else order[j][above[j]][:count].tolist()
        peaks.append([(cell // width, cell % width) for cell in cells])
    return peaks


def peak_points(cells: Sequence[tuple[int, int]], map_size: tuple[int, int],
                image_size: tuple[int, int]) -> list[Point]:
    """Map cells ``(row, col)`` of an ``(h_a, w_a)`` map to ``(x, y)`` pixel
    coordinates of the cells' centres on an image of ``(width, height)``
    (PIL's ``Image.size``) showing the same field of view."""
    h_a, w_a = map_size
    width, height = image_size
    return [((col + 0.5) * width / w_a, (row + 0.5) * height / h_a) for row, col in cells]


def pool_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel masks ``(n, H, W)`` to the ``size = (h_a, w_a)`` grid: a cell is set
    iff more than half of the pixels it covers are (area average > 0.5)."""
    pooled = F.adaptive_avg_pool2d(masks.to(torch.float32).unsqueeze(1), size)
    return pooled.squeeze(1) > 0.5


def sam_word_masks(attention: AttentionMaps, image: Image.Image, segmenter: Segmenter,
                   points_per_word: int = 1) -> torch.Tensor:
    """Every word's mask on the attention-map grid, bool ``(n_words, h_a, w_a)``.

    A word with peaks (:func:`word_peaks`) gets the mask ``segmenter``
    returns for its peak points (:func:`peak_points` on ``image``, the phase-1
    image), pooled to the grid with :func:`pool_masks`; all such words go to
    the segmenter in one call. A word with a flat map keeps its cross-attention
    mask (``accdiffusion_prompts.word_masks``).
    """
    masks = word_masks(attention)
    map_size = (int(attention.maps.shape[0]), int(attention.maps.shape[1]))
    peaks = word_peaks(attention.maps, points_per_word)
    prompted = [j for j, cells in enumerate(peaks) if cells]
    if not prompted:
        return masks
    segmented = torch.as_tensor(
        segmenter(image, [peak_points(peaks[j], map_size, image.size) for j in prompted])
    )
    expected = (len(prompted), image.height, image.width)
    if tuple(segmented.shape) != expected:
        raise ValueError(f"the segmenter returned masks of shape {tuple(segmented.shape)}, expected {expected}")
    masks[prompted] = pool_masks(segmented.bool(), map_size).to(masks.device)
    return masks


@attrs.frozen
class SamOptions:
    """The options of the ``sam`` decomposer."""

    model: str = option(DEFAULT_MODEL, aliases=("sam_model",),
                        help="hub id or local folder of the SAM checkpoint (loaded on first use)")
    threshold: float = option(0.3, minimum=0.0, maximum=1.0, aliases=("c",),
                              help="a word joins a window when its mask covers this share of it (the paper's c)")
    points_per_word: int = option(1, minimum=1, aliases=("sam_points",),
                                  help="peak points of a word's attention map that prompt SAM")
    device: str = option("auto", help="where SAM runs: auto (as the run: cuda, then mps, then cpu) or a torch device")


class SamDecomposer:
    """The ``sam`` decomposer: AccDiffusion's patch prompts with Segment Anything masks.

    ``model``: a hub id or local folder of a SAM checkpoint (loaded lazily,
    on the first prompt that needs it), a built ``transformers.SamModel``
    together with its ``processor``, or any other :class:`Segmenter` callable
    (one that is not a ``torch.nn.Module``).
    ``threshold``: the paper's ``c``. ``points_per_word``: how many peak points
    of a word's attention map prompt SAM. ``device``: where SAM runs
    (``"auto"`` as for the run). Words reach windows by the same rule as
    ``cross_attention`` (``accdiffusion_prompts.masks_to_prompts``).
    """

    needs_attention = True
    fixed_windows = True

    def __init__(self, model: str | torch.nn.Module | Segmenter = DEFAULT_MODEL, processor: Any = None, *,
                 threshold: float = 0.3, points_per_word: int = 1, device: str = "auto") -> None:
        location = model if isinstance(model, str) else DEFAULT_MODEL
        #: the option values (recorded in the run record)
        self.options = SamOptions(model=location, threshold=threshold, points_per_word=points_per_word,
                                  device=device)
        self.threshold = self.options.threshold
        self.points_per_word = self.options.points_per_word
        if isinstance(model, (str, torch.nn.Module)):
            self.segmenter: Segmenter = SamSegmenter(model, processor, device=device)
        elif processor is not None:
            raise ValueError("a processor goes with a built SamModel, not with a segmenter")
        else:
            self.segmenter = model
        self._cache: tuple[AttentionMaps, Image.Image, torch.Tensor] | None = None

    @classmethod
    def for_run(cls, settings: Any, options: SamOptions) -> SamDecomposer:
        """The decomposer for a run, from its :class:`SamOptions` (nothing is loaded yet);
        ``device="auto"`` runs SAM where the run runs (``settings.device``)."""
        device = getattr(settings, "device", "auto") if options.device == "auto" else options.device
        return cls(options.model, threshold=options.threshold, points_per_word=options.points_per_word,
                   device=device)

    def __repr__(self) -> str:
        return (f"SamDecomposer({self.segmenter!r}, threshold={self.threshold}, "
                f"points_per_word={self.points_per_word})")

    def word_masks(self, attention: AttentionMaps) -> torch.Tensor:
        """The masks used for ``attention``, ``(n_words, h_a, w_a)`` (for pictures): the
        SAM masks once :meth:`decompose` has segmented for these maps, else the
        cross-attention masks."""
        if self._cache is not None and self._cache[0] is attention:
            return self._cache[2]
        return word_masks(attention)

    def _masks(self, attention: AttentionMaps, low_res_image: Callable[[], Image.Image] | None) -> torch.Tensor:
        """The word masks of a request, segmented once per (maps, image) pair."""
        if low_res_image is None:
            return word_masks(attention)
        image = low_res_image()
        if self._cache is None or self._cache[0] is not attention or self._cache[1] is not image:
            masks = sam_word_masks(attention, image, self.segmenter, self.points_per_word)
            self._cache = (attention, image, masks)
        return self._cache[2]

    def decompose(self, request: DecomposeRequest) -> PatchPrompts:
        """One prompt per window: the words whose mask covers at least ``threshold``
        of the window, in prompt order, joined by single spaces (possibly empty).

        Without attention maps, or with no words, every window gets
        ``request.prompt``; without ``request.low_res_image`` every word keeps
        its cross-attention mask.
        """
        attention = request.attention
        if attention is None or not attention.words:
            return PatchPrompts((request.prompt,) * len(request.layout))
        if attention.maps.shape[-1] != len(attention.words):
            raise ValueError(f"{attention.maps.shape[-1]} attention maps for {len(attention.words)} words")
        masks = self._masks(attention, request.low_res_image)
        return masks_to_prompts(masks, attention.words, request.layout, request.scale, attention.latent_per_map,
                                self.threshold)
