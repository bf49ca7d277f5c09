"""Instance-aware patch prompts: an object's words for the window(s) holding the object.

AccDiffusion's rule (``cross_attention``, sec. 3.2, eq. 8) gives a word to
every window whose share covered by the word's cleaned cross-attention mask
is at least ``c``. Far above the native size one object's mask spans several
windows, so each of them gets "red circle" and draws a whole circle: the
object repeats inside its own region. ``instance`` treats each connected
region of a word's mask as one object *instance* and gives the object's
words only to the window(s) that hold most of it:

1. **Masks**: every word's cleaned mask, as ``cross_attention`` makes it
   (``accdiffusion_prompts.word_masks``: binarised at the map's mean, opened).
2. **Background words**: a word whose mask covers more than
   ``background_area`` of the map is a background word. It is given by
   ``background``: where the paper's rule keeps it (``paper``, the default:
   its mask covers at least ``threshold`` of the window, measured as
   ``cross_attention`` does with ``border``) or to every window
   (``everywhere``).
3. **Instances**: the connected regions of every other word's mask
   (8-connectivity by default: cells touching at a corner are one region,
   since a coarse map's cells of one round object often touch only
   diagonally; ``connectivity=4`` asks for a shared side). A region smaller
   than ``min_instance`` of the word's largest region is noise and dropped.
4. **Objects**: instances of different words that overlap (their common
   cells over the smaller instance's cells at least ``group``) are one
   object, transitively; an object's region is the union of its instances
   and its words are theirs ("red" and "circle" of "a red circle" attend to
   the same cells, so they travel together).
5. **Windows**: with the region upsampled by the phase's scale (nearest, as
   in ``cross_attention``), each window's *share* of an object is the part of
   the object's region inside the window over the whole region. The object's
   words go to the window with the largest share (ties: the window whose
   centre is nearest to the region's centroid, then the first) and to every
   window holding part of it whose share is at least ``share``.
6. **Prompts**: a window's prompt is its words in prompt order, joined by
   single spaces (possibly empty), as in ``cross_attention``.

Without attention maps, or for a prompt without words, every window gets the
whole prompt. Everything is done with tensor operations, connected regions
by label propagation with max-pooling (:func:`connected_components`).
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from accdiffusion import AttentionMaps, DecomposeRequest, PatchPrompts, WindowLayout
from accdiffusion.options import option
from accdiffusion_prompts import BORDERS, MaskDecomposer, keep_to_prompts, window_map_bounds, word_window_fractions

#: How background words are given (see :class:`InstanceDecomposer`).
BACKGROUND_MODES = ("paper", "everywhere")


def connected_components(masks: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Connected regions of each bool mask ``(n, h, w)``.

    Returns int64 labels ``(n, h, w)``: 0 outside the mask; inside, every cell
    of one region carries the same label, the row-major index plus one of
    the region's *last* cell (the largest index in it), different regions
    different labels. ``connectivity`` 8 joins cells that share a side or a
    corner, 4 only those sharing a side. Labels spread by max-pooling (a 3x3
    square, or a 3x1 and a 1x3 bar for 4-connectivity) restricted to the
    mask until nothing changes: as many passes as the longest path inside a
    region, all masks at once.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity {connectivity!r} must be 4 or 8")
    if masks.dim() != 3:
        raise ValueError(f"masks must be (n, h, w), got shape {tuple(masks.shape)}")
    n, h, w = masks.shape
    inside = masks.bool().unsqueeze(1)
    # float64 holds every index of a map up to 2**53 cells exactly
    index = torch.arange(1, h * w + 1, dtype=torch.float64, device=masks.device).view(1, 1, h, w)
    labels = torch.where(inside, index, torch.zeros((), dtype=torch.float64, device=masks.device))
    while True:
        if connectivity == 8:
            spread = F.max_pool2d(labels, 3, stride=1, padding=1)
        else:
            spread = torch.maximum(F.max_pool2d(labels, (3, 1), stride=1, padding=(1, 0)),
                                   F.max_pool2d(labels, (1, 3), stride=1, padding=(0, 1)))
        spread = torch.where(inside, spread, labels)
        if torch.equal(spread, labels):
            break
        labels = spread
    return labels.squeeze(1).to(torch.int64)


def word_instances(masks: torch.Tensor, connectivity: int = 8,
                   min_instance: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every word's instances: the connected regions of its mask.

    ``masks``: bool ``(n_words, h, w)``. Returns ``(instances, owners)``:
    bool ``(N, h, w)`` one region each, ordered by word and then by the
    region's label (:func:`connected_components`), and int64 ``(N,)`` the
    index of each region's word. A region with fewer cells than
    ``min_instance`` times the word's largest region is left out.
    """
    n, h, w = masks.shape
    labels = connected_components(masks, connectivity).flatten(1)
    keys = torch.arange(n, device=masks.device).unsqueeze(1) * (h * w + 1) + labels
    found = torch.unique(keys[labels > 0])
    owners, ids = found // (h * w + 1), found % (h * w + 1)
    instances = labels[owners] == ids.unsqueeze(1)
    sizes = instances.sum(1)
    largest = torch.zeros(n, dtype=sizes.dtype, device=masks.device).scatter_reduce(0, owners, sizes, "amax")
    kept = sizes >= min_instance * largest[owners]
    return instances[kept].view(-1, h, w), owners[kept]


def group_instances(instances: torch.Tensor, overlap: float) -> torch.Tensor:
    """Objects made of overlapping instances.

    ``instances``: bool ``(N, h, w)``. Two instances are linked when their
    common cells over the smaller one's cells are at least ``overlap`` (and
    they share a cell); objects are the classes of the transitive closure.
    Returns bool ``(G, N)``: row ``g`` marks the instances of object ``g``,
    objects ordered by their first instance.
    """
    count = instances.shape[0]
    if count == 0:
        return torch.zeros((0, 0), dtype=torch.bool, device=instances.device)
    flat = instances.flatten(1).to(torch.float64)
    common = flat @ flat.T
    sizes = flat.sum(1)
    smaller = torch.minimum(sizes.unsqueeze(0), sizes.unsqueeze(1)).clamp(min=1)
    linked = (common > 0) & (common / smaller >= overlap)
    linked |= torch.eye(count, dtype=torch.bool, device=instances.device)
    reach = linked.to(torch.float64)
    while True:  # closure by repeated squaring: log2(N) products at most
        wider = ((reach @ reach) > 0).to(torch.float64)
        if torch.equal(wider, reach):
            break
        reach = wider
    first = reach.bool().to(torch.int64).argmax(1)  # each instance's object: its first reachable instance
    objects = torch.unique(first)
    return first.unsqueeze(0) == objects.unsqueeze(1)


def region_window_shares(regions: torch.Tensor, layout: WindowLayout, scale: int,
                         latent_per_map: int) -> torch.Tensor:
    """Share of each region inside each window, float64 ``(G, K)``.

    ``regions``: bool ``(G, h_a, w_a)`` on the phase-1 map, upsampled by
    ``scale`` (nearest neighbour) like the word masks of ``cross_attention``;
    each window is mapped onto it with
    ``accdiffusion_prompts.window_map_bounds`` (clipped to the canvas). The
    share is the region's cells inside the window over all its cells (0 for
    an empty region).
    """
    resized = regions.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    _, map_height, map_width = resized.shape
    integral = F.pad(resized.to(torch.int64).cumsum(1).cumsum(2), (1, 0, 1, 0))
    bounds = window_map_bounds(layout, latent_per_map, map_height, map_width).to(regions.device)
    r0, r1, c0, c1 = bounds.unbind(1)
    inside = integral[:, r1, c1] - integral[:, r0, c1] - integral[:, r1, c0] + integral[:, r0, c0]
    total = integral[:, -1, -1].clamp(min=1).unsqueeze(1)
    return inside.to(torch.float64) / total.to(torch.float64)


def chosen_windows(regions: torch.Tensor, shares: torch.Tensor, layout: WindowLayout, scale: int,
                   latent_per_map: int, share: float) -> torch.Tensor:
    """Which windows get each object, bool ``(G, K)``: the window with the
    largest share (ties: the window whose centre is nearest to the region's
    centroid, then the first in layout order) and every window holding part
    of it whose share is at least ``share``. An empty region gets no window."""
    resized = regions.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2).to(torch.float64)
    _, map_height, map_width = resized.shape
    rows = torch.arange(map_height, dtype=torch.float64, device=regions.device) + 0.5
    cols = torch.arange(map_width, dtype=torch.float64, device=regions.device) + 0.5
    mass = resized.sum((1, 2)).clamp(min=1)
    centroid = torch.stack([(resized.sum(2) * rows).sum(1) / mass, (resized.sum(1) * cols).sum(1) / mass], 1)
    bounds = window_map_bounds(layout, latent_per_map, map_height, map_width).to(regions.device)
    centres = torch.stack([bounds[:, 0] + bounds[:, 1], bounds[:, 2] + bounds[:, 3]], 1).to(torch.float64) / 2
    distance = torch.cdist(centroid, centres)  # (G, K)
    best_share = shares.amax(1, keepdim=True)
    tied = shares >= best_share - 1e-12
    best = torch.where(tied, distance, torch.full_like(distance, float("inf"))).argmin(1)
    chosen = (shares >= share) & (shares > 0)
    chosen[torch.arange(len(best), device=regions.device), best] = True
    return chosen & (best_share > 0)


@attrs.frozen
class InstanceDecomposer(MaskDecomposer):
    """The ``instance`` decomposer: each connected region of a word's mask is
    one object instance, whose words go only to the window(s) holding most
    of it; background words (masks over ``background_area`` of the map) stay
    where the paper's rule keeps them (``background="paper"``, with
    ``threshold``, the paper's ``c``, and ``border``) or in every window
    (``"everywhere"``). See the module's docstring for the steps.
    """

    # no alias "c": the paper's c is a threshold for every word, this one only for background words
    threshold: float = option(0.3, minimum=0.0, maximum=1.0,
                              help="with background=paper, a background word joins a window when its mask covers "
                                   "this share of it (the paper's c, eq. 8)")
    border: str = option("window", choices=BORDERS,
                         help="with background=paper, a border window's share over the whole window, the part in "
                              "the jitter padding counting as unset (window, the release), or over its part on the "
                              "canvas (clipped)")
    share: float = option(0.5, minimum=0.0, maximum=1.0,
                          help="besides the window holding the largest share of an object, every window holding "
                               "at least this share of it gets its words")
    background_area: float = option(0.4, minimum=0.0, maximum=1.0,
                                    help="a word whose mask covers more than this share of the map is a background "
                                         "word")
    background: str = option("paper", choices=BACKGROUND_MODES,
                             help="background words go where the paper's rule keeps them (paper: mask covers at "
                                  "least threshold of the window) or to every window (everywhere)")
    group: float = option(0.5, minimum=0.0, maximum=1.0, min_exclusive=True,
                          help="instances of different words are one object when their common cells are at least "
                               "this share of the smaller one")
    min_instance: float = option(0.5, minimum=0.0, maximum=1.0,
                                 help="a region of a word's mask smaller than this share of the word's largest "
                                      "region is noise, not an instance")
    connectivity: int = option(8, choices=(8, 4),
                               help="cells of one region touch at a side or a corner (8) or at a side only (4)")

    def masks_prompts(self, masks: torch.Tensor, words: tuple[str, ...], request: DecomposeRequest,
                      latent_per_map: int) -> PatchPrompts:
        """One prompt per window by the instance rule (the module's docstring)."""
        return keep_to_prompts(self.keep(masks, request.layout, request.scale, latent_per_map), words)

    def keep(self, masks: torch.Tensor, layout: WindowLayout, scale: int, latent_per_map: int) -> torch.Tensor:
        """Which window keeps which word, bool ``(n_words, n_windows)``, from the
        words' cleaned masks ``(n_words, h_a, w_a)``."""
        n_words, h, w = masks.shape
        background = masks.flatten(1).to(torch.float64).mean(1) > self.background_area
        if self.background == "everywhere":
            keep = background.unsqueeze(1).expand(n_words, len(layout)).clone()
        else:
            fractions = word_window_fractions(masks, layout, scale, latent_per_map, self.border)
            keep = background.unsqueeze(1) & (fractions >= self.threshold)
        objects = ~background
        instances, owners = word_instances(masks[objects], self.connectivity, self.min_instance)
        if len(owners) == 0:
            return keep
        owners = torch.nonzero(objects).squeeze(1)[owners]
        members = group_instances(instances, self.group)  # (G, N)
        regions = (members.to(torch.float64) @ instances.flatten(1).to(torch.float64) > 0).view(-1, h, w)
        shares = region_window_shares(regions, layout, scale, latent_per_map)
        windows = chosen_windows(regions, shares, layout, scale, latent_per_map, self.share)  # (G, K)
        words = torch.zeros((members.shape[0], n_words), dtype=torch.float64, device=masks.device)
        words.index_add_(1, owners, members.to(torch.float64))  # (G, n_words): instances of each word
        return keep | ((words > 0).to(torch.float64).T @ windows.to(torch.float64) > 0)
