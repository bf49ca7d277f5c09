"""Tests of the ``instance`` decomposer: hand-worked masks on known window layouts,
its pieces (connected regions, instances, objects, shares), a run on a tiny model,
and the decomposer contract."""

from __future__ import annotations

from collections import deque

import accdiffusion
import pytest
import torch
from accdiffusion import AttentionMaps, SettingsError
from accdiffusion_instance import (
    InstanceDecomposer,
    chosen_windows,
    connected_components,
    group_instances,
    region_window_shares,
    word_instances,
)
from accdiffusion_instance.plugin import plugin
from accdiffusion_prompts.plugin import plugin as prompts_plugin
from accdiffusion_prompts import CrossAttentionDecomposer, MaskDecomposer, word_window_fractions
from accdiffusion_testing.kit import (
    PromptDecomposerContract,
    attention_maps,
    decompose_request,
    generator,
    host_with,
    jittered,
    window_layout,
)

# The hand-worked layout: phase 4 (scale 4) of an 8x8 attention map with 4 latent px per
# map cell, so a 128x128 latent canvas; windows of 32 with stride 32 make a 4x4 grid of
# windows that do not overlap. On the map upsampled by 4 (32x32) window (r, c) covers
# rows [8r, 8r + 8) and columns [8c, 8c + 8): 2x2 cells of the 8x8 map.
SCALE = 4


def grid4() -> accdiffusion.WindowLayout:
    return window_layout(128, 128, 32, 32)


def window(row: int, col: int) -> int:
    """The index of window (row, col) of :func:`grid4`."""
    return 4 * row + col


def cells(*boxes: tuple[int, int, int, int], size: int = 8) -> torch.Tensor:
    """A bool ``(size, size)`` mask set on the boxes ``(row0, row1, col0, col1)`` (half-open)."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    for r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


def decompose(decomposer, words: str, masks, layout=None, scale: int = SCALE, prompt: str | None = None):
    layout = layout if layout is not None else grid4()
    attention = attention_maps(words, masks)
    return decomposer.decompose(decompose_request(prompt or words, layout, scale, attention))


def windows_with(result, word: str) -> list[int]:
    return [k for k, kept in enumerate(result.words) if word in kept]


# An object of 3x3 cells at rows 2-4, columns 2-4: upsampled rows and columns [8, 20), so it
# lies in windows (1,1) (8x8 = 64 of its 144 px: 0.44), (1,2) and (2,1) (32: 0.22 each) and
# (2,2) (16: 0.11).
OBJECT = cells((2, 5, 2, 5))
# A background word: everywhere but the object (55 of 64 cells).
BACKGROUND = ~OBJECT


# -- the rule, hand-worked ------------------------------------------------------------


def test_one_object_over_four_windows_goes_to_the_window_holding_most_of_it() -> None:
    result = decompose(InstanceDecomposer(), "red circle", [OBJECT, OBJECT])
    assert windows_with(result, "red") == windows_with(result, "circle") == [window(1, 1)]
    assert result.prompts[window(1, 1)] == "red circle"
    assert all(p == "" for k, p in enumerate(result.prompts) if k != window(1, 1))
    # the paper's rule (c = 0.3) gives the object to three of the four windows it touches
    paper = decompose(CrossAttentionDecomposer(), "red circle", [OBJECT, OBJECT])
    assert windows_with(paper, "red") == [window(1, 1), window(1, 2), window(2, 1)]


def test_share_adds_every_window_holding_that_much_of_the_object() -> None:
    # shares 0.44, 0.22, 0.22, 0.11: share 0.2 adds the two windows at 0.22
    result = decompose(InstanceDecomposer(share=0.2), "red circle", [OBJECT, OBJECT])
    assert windows_with(result, "red") == [window(1, 1), window(1, 2), window(2, 1)]
    result = decompose(InstanceDecomposer(share=0.0), "red circle", [OBJECT, OBJECT])
    assert windows_with(result, "red") == [window(1, 1), window(1, 2), window(2, 1), window(2, 2)]
    result = decompose(InstanceDecomposer(share=1.0), "red circle", [OBJECT, OBJECT])
    assert windows_with(result, "red") == [window(1, 1)]


def test_two_instances_of_one_word_go_to_their_two_windows() -> None:
    # two circles, each inside one window: (0, 0) and (3, 2)
    circles = cells((0, 2, 0, 2), (6, 8, 4, 6))
    result = decompose(InstanceDecomposer(), "circle", [circles])
    assert windows_with(result, "circle") == [window(0, 0), window(3, 2)]
    # each over four windows: each goes to the window holding most of it
    circles = cells((1, 4, 1, 4), (4, 7, 5, 8))  # upsampled [4, 16) and [16, 28) x [20, 32)
    result = decompose(InstanceDecomposer(), "circle", [circles])
    assert windows_with(result, "circle") == [window(1, 1), window(2, 3)]


def test_a_background_word_stays_in_every_window() -> None:
    result = decompose(InstanceDecomposer(background="everywhere"), "a red circle", [BACKGROUND, OBJECT, OBJECT])
    assert windows_with(result, "a") == list(range(16))
    assert result.prompts[window(1, 1)] == "a red circle"
    assert all(p == "a" for k, p in enumerate(result.prompts) if k != window(1, 1))


def test_background_paper_keeps_a_background_word_where_the_paper_rule_does() -> None:
    masks = [BACKGROUND, OBJECT, OBJECT]
    result = decompose(InstanceDecomposer(threshold=0.8), "a red circle", masks)
    fractions = word_window_fractions(torch.stack(masks), grid4(), SCALE, 4)
    expected = [k for k in range(16) if fractions[0, k] >= 0.8]
    # the four windows the object touches keep 0, 0.5, 0.5 and 0.75 of the background
    assert windows_with(result, "a") == expected == [k for k in range(16) if k not in (5, 6, 9, 10)]
    assert windows_with(result, "red") == [window(1, 1)]


def test_background_area_decides_what_is_background() -> None:
    # the object covers 9 of 64 cells (0.14): background when the bound is lower
    result = decompose(InstanceDecomposer(background_area=0.1, background="everywhere"), "red circle",
                       [OBJECT, OBJECT])
    assert windows_with(result, "red") == list(range(16))
    # by the paper's rule: the windows it covers at least c = 0.3 of
    result = decompose(InstanceDecomposer(background_area=0.1), "red circle", [OBJECT, OBJECT])
    assert windows_with(result, "red") == [window(1, 1), window(1, 2), window(2, 1)]
    result = decompose(InstanceDecomposer(background_area=0.9), "a red circle", [BACKGROUND, OBJECT, OBJECT])
    # the "background" word's mask (0.86 of the map) is now an object: one region, one window
    assert len(windows_with(result, "a")) == 1


def test_empty_prompt_or_no_maps_gives_the_whole_prompt() -> None:
    layout = grid4()
    decomposer = InstanceDecomposer()
    for attention in (None, AttentionMaps(torch.zeros(8, 8, 0), (), 4)):
        result = decomposer.decompose(decompose_request("a red circle", layout, SCALE, attention))
        assert result.prompts == ("a red circle",) * len(layout)
    result = decomposer.decompose(decompose_request("", layout, SCALE, AttentionMaps(torch.zeros(8, 8, 0), (), 4)))
    assert result.prompts == ("",) * len(layout)


def test_words_of_one_object_travel_together() -> None:
    # "red" at rows 2-4, columns 1-4 and "circle" at rows 2-4, columns 4-5 share 3 cells, half
    # of "circle": one object. Apart, "red" would go to window (1, 1) and "circle" to (1, 2).
    red, circle = cells((2, 5, 1, 5)), cells((2, 5, 4, 6))
    apart = decompose(InstanceDecomposer(group=1.0), "red circle", [red, circle])
    assert windows_with(apart, "red") == [window(1, 1)] and windows_with(apart, "circle") == [window(1, 2)]
    together = decompose(InstanceDecomposer(), "red circle", [red, circle])
    assert windows_with(together, "red") == windows_with(together, "circle") == [window(1, 1)]
    for share in (0.0, 0.3, 0.5):
        result = decompose(InstanceDecomposer(share=share), "red circle", [red, circle])
        assert all(("red" in kept) == ("circle" in kept) for kept in result.words)


def test_two_objects_of_one_prompt_go_to_their_own_windows() -> None:
    square, circle = cells((0, 2, 0, 2)), cells((6, 8, 6, 8))
    # "and" attends to both objects: one instance joins each; the second "a" attends to the circle
    result = decompose(InstanceDecomposer(background="everywhere"), "a red square and a blue circle",
                       [~(square | circle), square, square, square | circle, circle, circle, circle])
    assert result.prompts[window(0, 0)] == "a red square and"
    assert result.prompts[window(3, 3)] == "a and a blue circle"
    assert all(p == "a" for k, p in enumerate(result.prompts) if k not in (window(0, 0), window(3, 3)))


def test_noise_regions_are_not_instances() -> None:
    # a 9-cell object and a stray cell far away in window (3, 3)
    noisy = OBJECT | cells((7, 8, 7, 8))
    result = decompose(InstanceDecomposer(), "circle", [noisy])
    assert windows_with(result, "circle") == [window(1, 1)]
    result = decompose(InstanceDecomposer(min_instance=0.0), "circle", [noisy])
    assert windows_with(result, "circle") == [window(1, 1), window(3, 3)]


def test_connectivity_decides_whether_diagonal_cells_are_one_instance() -> None:
    # two 2x2 blocks touching at a corner, each inside its own window
    diagonal = cells((0, 2, 0, 2), (2, 4, 2, 4))
    eight = decompose(InstanceDecomposer(share=0.9), "circle", [diagonal])
    assert windows_with(eight, "circle") == [window(0, 0)]  # one instance, half in each: the first
    four = decompose(InstanceDecomposer(share=0.9, connectivity=4), "circle", [diagonal])
    assert windows_with(four, "circle") == [window(0, 0), window(1, 1)]


def test_overlapping_windows_and_ties() -> None:
    # 3x3 windows of 32, stride 16, at scale 2: on the 16x16 upsampled map the windows are 8
    # wide and start at 0, 4 and 8 on each axis
    layout = window_layout(64, 64, 32)
    # a 2x2-cell object upsampled to [4, 8) lies wholly in the four windows starting at 0 and 4
    obj = cells((2, 4, 2, 4))
    assert windows_with(decompose(InstanceDecomposer(share=1.0), "circle", [obj], layout, scale=2),
                        "circle") == [0, 1, 3, 4]
    # with no window above the share, one of the tied windows: the one whose centre is nearest
    # to the object's centroid; cell (2, 2) is upsampled to [4, 6) (centroid 5: nearer to the
    # centre 4 of the window at 0 than to 8), cell (3, 3) to [6, 8) (nearer to 8)
    for cell, expected in (((2, 3, 2, 3), 0), ((3, 4, 3, 4), 4)):
        region = cells(cell).unsqueeze(0)
        shares = region_window_shares(region, layout, 2, 4)
        assert shares[0].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        chosen = chosen_windows(region, shares, layout, 2, 4, share=1.5)
        assert chosen[0].nonzero().flatten().tolist() == [expected]
    # equally near: the first
    chosen = chosen_windows(obj.unsqueeze(0), region_window_shares(obj.unsqueeze(0), layout, 2, 4), layout, 2, 4,
                            share=1.5)
    assert chosen[0].nonzero().flatten().tolist() == [0]


# -- the pieces ------------------------------------------------------------------------


def reference_components(mask: torch.Tensor, connectivity: int) -> list[set[tuple[int, int]]]:
    """Connected regions by breadth-first search."""
    h, w = mask.shape
    steps = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    if connectivity == 4:
        steps = [(dr, dc) for dr, dc in steps if dr == 0 or dc == 0]
    seen: set[tuple[int, int]] = set()
    regions = []
    for r in range(h):
        for c in range(w):
            if mask[r, c] and (r, c) not in seen:
                region, queue = set(), deque([(r, c)])
                seen.add((r, c))
                while queue:
                    y, x = queue.popleft()
                    region.add((y, x))
                    for dy, dx in steps:
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and (ny, nx) not in seen:
                            seen.add((ny, nx))
                            queue.append((ny, nx))
                regions.append(region)
    return regions


@pytest.mark.parametrize("connectivity", [8, 4])
def test_connected_components_match_a_search(connectivity: int) -> None:
    masks = torch.rand((6, 13, 17), generator=generator(0)) > torch.tensor([0.3, 0.5, 0.6, 0.7, 0.0, 1.0]).view(6, 1, 1)
    labels = connected_components(masks, connectivity)
    assert labels.shape == masks.shape and labels.dtype == torch.int64
    for j in range(masks.shape[0]):
        assert torch.equal(labels[j] > 0, masks[j])
        found = {}
        for r, c in masks[j].nonzero().tolist():
            found.setdefault(int(labels[j, r, c]), set()).add((r, c))
        expected = reference_components(masks[j], connectivity)
        assert sorted(map(sorted, found.values())) == sorted(map(sorted, expected))
        for label, region in found.items():  # each region's label: its last cell's index + 1
            assert label == max(r * 17 + c for r, c in region) + 1


def test_connected_components_of_a_long_path_and_refusals() -> None:
    snake = torch.zeros(1, 9, 9, dtype=torch.bool)
    snake[0, ::2] = True
    for r in range(1, 9, 2):
        snake[0, r, 8 if r % 4 == 1 else 0] = True
    labels = connected_components(snake, 4)
    assert labels[snake].unique().tolist() == [9 * 9]  # one region, labelled by its last cell
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(snake, 6)
    with pytest.raises(ValueError, match="n, h, w"):
        connected_components(snake[0], 8)


def test_word_instances_by_word_and_size() -> None:
    masks = torch.stack([cells((0, 2, 0, 2), (5, 8, 5, 8)), cells((3, 4, 3, 4)), cells()])
    instances, owners = word_instances(masks, 8, 0.0)
    assert owners.tolist() == [0, 0, 1]
    assert [int(i.sum()) for i in instances] == [4, 9, 1]
    instances, owners = word_instances(masks, 8, 0.5)  # 4 < 0.5 * 9: noise
    assert owners.tolist() == [0, 1] and [int(i.sum()) for i in instances] == [9, 1]


def test_group_instances_is_transitive() -> None:
    # a (8 cells) and b (6) share 2 cells, b and c (6) share 2: 1/3 of the smaller one; d is apart
    a, b, c, d = cells((0, 2, 0, 4)), cells((0, 2, 3, 6)), cells((0, 2, 5, 8)), cells((6, 8, 0, 2))
    members = group_instances(torch.stack([a, b, c, d]), 0.3)
    assert members.tolist() == [[True, True, True, False], [False, False, False, True]]
    members = group_instances(torch.stack([a, b, c, d]), 0.5)
    assert members.tolist() == [[True, False, False, False], [False, True, False, False],
                                [False, False, True, False], [False, False, False, True]]
    assert group_instances(torch.zeros(0, 8, 8, dtype=torch.bool), 0.5).shape == (0, 0)


def test_region_window_shares_sum_to_one_over_a_partition() -> None:
    regions = torch.stack([OBJECT, cells((0, 8, 0, 8)), cells()])
    shares = region_window_shares(regions, grid4(), SCALE, 4)
    assert shares.shape == (3, 16) and shares.dtype == torch.float64
    assert shares[0, window(1, 1)] == pytest.approx(64 / 144)
    assert shares[:2].sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert shares[2].tolist() == [0.0] * 16


def test_jittered_windows_in_the_padding() -> None:
    layout = jittered(grid4(), 3, generator(1))
    result = decompose(InstanceDecomposer(background="everywhere"), "a red circle", [BACKGROUND, OBJECT, OBJECT],
                       layout)
    assert len(result.prompts) == 16 and windows_with(result, "a") == list(range(16))
    assert len(windows_with(result, "red")) == 1 and windows_with(result, "red") == windows_with(result, "circle")


def test_refuses_maps_that_do_not_match_the_words() -> None:
    attention = attention_maps("red circle", [OBJECT, OBJECT])
    broken = AttentionMaps(attention.maps[..., :1], attention.words, 4)
    with pytest.raises(ValueError, match="1 attention maps for 2 words"):
        InstanceDecomposer().decompose(decompose_request("red circle", grid4(), SCALE, broken))


# -- options and registration -------------------------------------------------------------


def test_is_a_mask_decomposer_with_the_paper_options() -> None:
    decomposer = InstanceDecomposer()
    assert isinstance(decomposer, MaskDecomposer) and isinstance(decomposer, accdiffusion.PromptDecomposer)
    assert decomposer.needs_attention and decomposer.fixed_windows
    assert (decomposer.threshold, decomposer.border, decomposer.background) == (0.3, "window", "paper")


def test_options_from_settings() -> None:
    settings = accdiffusion.Settings(prompt="x", prompt_decomposer="instance",
                                     plugin_options={"instance.threshold": 0.45, "instance.share": "0.25",
                                                     "instance.background": "everywhere", "instance.connectivity": "4"})
    decomposer = host_with(plugin).create("prompt_decomposer", "instance", settings)
    assert decomposer == InstanceDecomposer(threshold=0.45, share=0.25, background="everywhere", connectivity=4)
    # the paper's c (an alias of cross_attention.threshold) is not this threshold, which only places background words
    with pytest.raises(SettingsError, match="option c=0.4 is for the prompt_decomposer 'cross_attention', which is not"):
        host_with(plugin, prompts_plugin).check_options(accdiffusion.Settings(prompt="x", prompt_decomposer="instance",
                                                              plugin_options={"c": 0.4}),
                                        {"prompt_decomposer": "instance"})


@pytest.mark.parametrize("values", [{"share": 1.5}, {"group": 0.0}, {"connectivity": 6},
                                    {"background": "nowhere"}, {"min_instance": -0.1}, {"background_area": 2.0}])
def test_bad_values_are_refused(values: dict) -> None:
    with pytest.raises(SettingsError):
        InstanceDecomposer(**values)


def test_a_run_on_a_tiny_model(tiny_sd15_pipeline) -> None:
    result = accdiffusion.generate("a red circle on a white background", pipeline=tiny_sd15_pipeline,
                                   scale=2, steps=2, seed=0, prompt_decomposer="instance")
    assert result.image.size == (64, 64)
    patch = result.phases[1].patch_prompts
    assert patch is not None and len(patch.prompts) == len(result.phases[1].layout) > 1
    for kept in patch.words:  # a subsequence of the words, in prompt order
        rest = iter(result.attention.words)
        assert all(any(w == x for x in rest) for w in kept)


class TestInstanceContract(PromptDecomposerContract):
    plugin = plugin
    name = "instance"
    entry_point = "instance"


class TestInstanceOptionsContract(PromptDecomposerContract):
    plugin = plugin
    name = "instance"
    entry_point = "instance"
    options = {"share": 0.2, "background": "everywhere", "connectivity": 4, "group": 0.8, "min_instance": 0.0,
               "background_area": 0.3, "threshold": 0.1, "border": "clipped"}
