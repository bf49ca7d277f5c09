"""Tests of the prompt decomposers against hand-worked attention maps, and the decomposer contract."""

from __future__ import annotations


import accdiffusion
import pytest
import torch
from accdiffusion import AttentionMaps, DecomposeRequest, Window, WindowLayout
from accdiffusion_testing.kit import PromptDecomposerContract, attention_maps, host_with

from accdiffusion_prompts import (
    CrossAttentionDecomposer,
    IdenticalDecomposer,
    binarize,
    morphological_open,
    opening_iterations,
    window_map_area,
    window_map_bounds,
    word_masks,
    word_window_fractions,
)
from accdiffusion_prompts.plugin import plugin


def grid_layout(scale: int, map_size: int, f: int) -> WindowLayout:
    """The 3x3 (for scale 2) layout of native windows with half-window stride."""
    window = map_size * f
    stride = window // 2
    side = scale * window
    starts = range(0, side - window + 1, stride)
    return WindowLayout(tuple(Window(t, l, window, window) for t in starts for l in starts), side, side)


def cat_dog_maps() -> torch.Tensor:
    """32x32 maps: "cat" high in the top-left quadrant only, "dog" high everywhere
    but one pixel (20, 20)."""
    cat = torch.zeros(32, 32)
    cat[:16, :16] = 1.0
    dog = torch.ones(32, 32)
    dog[20, 20] = 0.0
    return torch.stack([cat, dog], dim=-1)


def request(maps: torch.Tensor, words: tuple[str, ...], layout: WindowLayout, scale: int = 2,
            prompt: str = "a prompt") -> DecomposeRequest:
    return DecomposeRequest(prompt, layout, scale, AttentionMaps(maps, words, 4))


# -- registration and the contract -------------------------------------------


class TestCrossAttentionContract(PromptDecomposerContract):
    plugin = plugin
    name = "cross_attention"
    entry_point = "prompts"


class TestCrossAttentionOptionsContract(PromptDecomposerContract):
    plugin = plugin
    name = "cross_attention"
    entry_point = "prompts"
    options = {"threshold": 0.1, "border": "clipped", "per_token": True}


class TestIdenticalContract(PromptDecomposerContract):
    plugin = plugin
    name = "identical"
    entry_point = "prompts"


def test_threshold_from_the_alias_c() -> None:
    settings = accdiffusion.Settings(prompt="x", plugin_options={"c": 0.45})
    decomposer = host_with(plugin).create("prompt_decomposer", "cross_attention", settings)
    assert decomposer == CrossAttentionDecomposer(threshold=0.45)


def test_protocols_and_needs_attention() -> None:
    assert isinstance(CrossAttentionDecomposer(), accdiffusion.PromptDecomposer)
    assert isinstance(IdenticalDecomposer(), accdiffusion.PromptDecomposer)
    assert CrossAttentionDecomposer.needs_attention is True
    assert IdenticalDecomposer.needs_attention is False
    assert CrossAttentionDecomposer().threshold == 0.3


def test_invalid_threshold() -> None:
    with pytest.raises(ValueError):
        CrossAttentionDecomposer(threshold=1.5)


# -- steps -------------------------------------------------------------------


def test_binarize_is_strictly_above_mean_per_word() -> None:
    maps = torch.tensor([[[1.0, 5.0], [2.0, 5.0]], [[3.0, 5.0], [6.0, 5.0]]])  # (2, 2, 2)
    # word 0: values 1 2 3 6, mean 3 -> only 6 is above; word 1 is constant -> nothing.
    expected = torch.tensor([[[False, False], [False, True]], [[False, False], [False, False]]])
    assert torch.equal(binarize(maps), expected)


def opening_case() -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[5, 20] = True  # isolated pixel: removed
    mask[10:15, 10:15] = True  # 5x5 block: kept as is
    mask[20:27, 0:3] = True  # 7x3 block on the left border: kept as is
    mask[20:27, 20:23] = True  # the same block inside the map: too thin, removed
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[10:15, 10:15] = True
    expected[20:27, 0:3] = True
    return mask, expected


def test_opening_hand_computed() -> None:
    mask, expected = opening_case()
    assert torch.equal(morphological_open(mask[None], 2)[0], expected)


def test_opening_one_iteration_hand_computed() -> None:
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0:3, 0:3] = True  # 3x3 in the corner: survives one 3x3 opening
    mask[4, 4] = True  # isolated: removed
    mask[2:6, 5] = True  # one pixel wide along the right border: erodes away
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[0:3, 0:3] = True
    assert torch.equal(morphological_open(mask[None], 1)[0], expected)


def reference_open(mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """OpenCV's opening written out: 3x3 min / max over in-map neighbours, one pass at a time."""
    height, width = mask.shape

    def step(m: torch.Tensor, reduce) -> torch.Tensor:
        out = m.clone()
        for y in range(height):
            for x in range(width):
                out[y, x] = reduce(m[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2])
        return out

    m = mask.clone()
    for _ in range(iterations):
        m = step(m, torch.all)
    for _ in range(iterations):
        m = step(m, torch.any)
    return m


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_opening_matches_iterated_3x3_reference(iterations: int) -> None:
    g = torch.Generator().manual_seed(iterations)
    masks = torch.rand((3, 13, 11), generator=g) > 0.3
    got = morphological_open(masks, iterations)
    for k in range(3):
        assert torch.equal(got[k], reference_open(masks[k], iterations))


def test_opening_zero_iterations_is_identity() -> None:
    mask, _ = opening_case()
    assert torch.equal(morphological_open(mask[None], 0)[0], mask)


def test_word_masks_use_h_over_16_iterations() -> None:
    small = torch.zeros(8, 8, 1)
    small[3, 3, 0] = 1.0  # h_a = 8 -> 0 iterations: the isolated pixel stays
    assert word_masks(AttentionMaps(small, ("w",), 4))[0].sum() == 1
    mask, expected = opening_case()
    large = mask.float()[..., None]  # h_a = 32 -> 2 iterations
    assert torch.equal(word_masks(AttentionMaps(large, ("w",), 4))[0], expected)


def test_opening_iterations_use_the_longer_side() -> None:
    # SDXL at 1024x3072: phase 1 at about 341x1024 px, a 43x128 latent, 11x32 maps
    assert opening_iterations(11, 32) == 2 and opening_iterations(32, 11) == 2
    assert opening_iterations(32, 32) == 2 and opening_iterations(15, 15) == 0
    assert opening_iterations(16, 8) == 1 and opening_iterations(47, 48) == 3


def test_wide_map_is_cleaned_with_two_iterations() -> None:
    """An 11x32 map (1024x3072 image proportions): h_a // 16 would be 0 and keep
    the speck; max(h_a, w_a) // 16 = 2 opens with a 5x5 square."""
    maps = torch.zeros(11, 32, 1)
    maps[2:9, 3:11, 0] = 1.0    # a 7x8 block survives a 5x5 opening unchanged
    maps[5, 20, 0] = 1.0        # an isolated speck does not
    maps[3:7, 22:26, 0] = 1.0   # nor does a 4x4 block inside the map
    maps[0:4, 26:32, 0] = 1.0   # a 4x6 block in the top-right corner does: eroding counts
    #                             outside as set, so rows 0-1, cols 28-31 stay; dilating restores it
    expected = torch.zeros(11, 32, dtype=torch.bool)
    expected[2:9, 3:11] = True
    expected[0:4, 26:32] = True
    got = word_masks(AttentionMaps(maps, ("w",), 4))[0]
    assert torch.equal(got, expected)
    # 0 iterations (the map height's count) would have kept everything
    assert torch.equal(morphological_open(binarize(maps), 11 // 16)[0], binarize(maps)[0])


def test_window_map_bounds_floor_ceil_and_clip() -> None:
    # canvas 40x40 padded by 3; windows given on the padded canvas
    layout = WindowLayout(
        (Window(0, 3, 8, 8), Window(9, 12, 8, 8), Window(38, 38, 8, 8)), 40, 40, pad=3
    )
    bounds = window_map_bounds(layout, latent_per_map=4, map_height=10, map_width=10)
    # on canvas: (-3, 0) -> rows clipped to [0, 5) -> [0, 2); cols [0, 8) -> [0, 2)
    #            (6, 9)  -> rows [6, 14) -> [1, 4); cols [9, 17) -> [2, 5)
    #            (35, 35) -> [35, 43) clipped to [35, 40) -> [8, 10)
    assert bounds.tolist() == [[0, 2, 0, 2], [1, 4, 2, 5], [8, 10, 8, 10]]


def test_fractions_hand_worked() -> None:
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = True
    fractions = word_window_fractions(masks, grid_layout(2, 32, 4), scale=2, latent_per_map=4)
    assert fractions.dtype == torch.float64
    assert fractions[0].tolist() == [1.0, 0.5, 0.0, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("border", ["window", "clipped"])
def test_fractions_match_direct_sums(border: str) -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.rand((4, 16, 24), generator=g) > 0.6
    layout = WindowLayout(
        (Window(0, 0, 64, 64), Window(5, 17, 64, 64), Window(30, 70, 50, 26), Window(90, 120, 64, 64)),
        128, 192, pad=2,
    )
    got = word_window_fractions(masks, layout, scale=2, latent_per_map=4, border=border)
    big = masks.repeat_interleave(2, 1).repeat_interleave(2, 2)
    # whole windows on the canvas: (-2, -2), (3, 15), (28, 68), (88, 118) with their sizes
    whole = [17 * 17, 17 * 17, 13 * 7, 16 * 17]  # rows [floor(top / 4), ceil(bottom / 4)), columns likewise
    assert window_map_area(layout, 4).tolist() == whole
    for k, (r0, r1, c0, c1) in enumerate(window_map_bounds(layout, 4, 32, 48).tolist()):
        area = (r1 - r0) * (c1 - c0) if border == "clipped" else whole[k]
        assert torch.equal(got[:, k], big[:, r0:r1, c0:c1].sum(dim=(1, 2)).double() / area)


# -- decompose -----------------------------------------------------------------


def test_cat_dog_prompts() -> None:
    result = CrossAttentionDecomposer(threshold=0.3).decompose(
        request(cat_dog_maps(), ("cat", "dog"), grid_layout(2, 32, 4))
    )
    assert result.prompts == (
        "cat dog", "cat dog", "dog",
        "cat dog", "dog", "dog",
        "dog", "dog", "dog",
    )
    assert result.words[0] == ("cat", "dog") and result.words[4] == ("dog",)


def test_cat_dog_masks() -> None:
    masks = word_masks(AttentionMaps(cat_dog_maps(), ("cat", "dog"), 4))
    cat = torch.zeros(32, 32, dtype=torch.bool)
    cat[:16, :16] = True  # the quadrant touches two borders and is not eroded from them
    dog = torch.ones(32, 32, dtype=torch.bool)
    dog[20, 20] = False  # an opening keeps a one-pixel hole
    assert torch.equal(masks[0], cat)
    assert torch.equal(masks[1], dog)


def test_fraction_exactly_threshold_is_kept() -> None:
    # the centre window sees exactly a quarter of the upsampled "cat" mask
    layout = grid_layout(2, 32, 4)
    kept = CrossAttentionDecomposer(threshold=0.25).decompose(request(cat_dog_maps(), ("cat", "dog"), layout))
    assert kept.prompts[4] == "cat dog"
    dropped = CrossAttentionDecomposer(threshold=0.2500001).decompose(
        request(cat_dog_maps(), ("cat", "dog"), layout)
    )
    assert dropped.prompts[4] == "dog"


def test_word_order_follows_prompt() -> None:
    maps = cat_dog_maps().flip(-1)  # "dog" first now
    result = CrossAttentionDecomposer().decompose(request(maps, ("dog", "cat"), grid_layout(2, 32, 4)))
    assert result.prompts[0] == "dog cat"


def test_window_may_get_empty_prompt() -> None:
    maps = cat_dog_maps()[..., :1]
    result = CrossAttentionDecomposer().decompose(request(maps, ("cat",), grid_layout(2, 32, 4)))
    assert result.prompts == ("cat", "cat", "", "cat", "", "", "", "", "")
    assert result.words[2] == ()


def test_scale_three_layout() -> None:
    result = CrossAttentionDecomposer().decompose(
        request(cat_dog_maps(), ("cat", "dog"), grid_layout(3, 32, 4), scale=3)
    )
    # 5x5 windows of 32 map pixels with stride 16 over a 96x96 map; "cat" covers [0, 48)^2
    cat_rows = [1.0, 1.0, 0.5, 0.0, 0.0]
    expected = [
        "cat dog" if cat_rows[i] * cat_rows[j] >= 0.3 else "dog" for i in range(5) for j in range(5)
    ]
    assert list(result.prompts) == expected


def test_jittered_layout_windows_are_clipped_to_canvas() -> None:
    # the same coordinates read on a canvas padded by 2: every window moves by (-2, -2)
    jittered = WindowLayout(grid_layout(2, 32, 4).windows, 256, 256, pad=2)
    masks = word_masks(AttentionMaps(cat_dog_maps(), ("cat", "dog"), 4))
    fractions = word_window_fractions(masks, jittered, scale=2, latent_per_map=4, border="clipped")
    # window 0: [-2, 126)^2 clipped to [0, 126)^2 -> map [0, 32)^2, all "cat"
    # window 1: cols [62, 190) -> map [15, 48): 17 of 33 columns are "cat"
    # window 4: map [15, 48)^2: 17 * 17 of 33 * 33 pixels
    assert fractions[0, :2].tolist() == [1.0, 17 / 33]
    assert fractions[0, 4].item() == 289 / 1089
    result = CrossAttentionDecomposer(border="clipped").decompose(
        request(cat_dog_maps(), ("cat", "dog"), jittered))
    assert result.prompts[:5] == ("cat dog", "cat dog", "dog", "cat dog", "dog")


def test_jittered_border_window_fraction_over_the_whole_window() -> None:
    """The release's form: a window reaching into the padding keeps its whole area.
    Window 0 is [-2, 126)^2 on the canvas, map rows and columns [-1, 32): 33 x 33
    map pixels of which the 32 x 32 inside the canvas are "cat"."""
    jittered = WindowLayout(grid_layout(2, 32, 4).windows, 256, 256, pad=2)
    masks = word_masks(AttentionMaps(cat_dog_maps(), ("cat", "dog"), 4))
    assert window_map_area(jittered, 4)[:2].tolist() == [33 * 33, 33 * 33]
    fractions = word_window_fractions(masks, jittered, scale=2, latent_per_map=4)
    assert fractions[0, 0].item() == 1024 / 1089
    # window 1 reaches into the padding at the top only: rows [-1, 32), cols [15, 48)
    assert fractions[0, 1].item() == 32 * 17 / 1089
    assert fractions[0, 4].item() == 289 / 1089  # inside the canvas: both forms agree


def test_border_decision_flips_at_the_default_threshold() -> None:
    """SDXL proportions: 32x32 maps, 128-px windows, jitter padding 16 latent px
    (4 map px). The corner window moved fully into the padding covers map
    [-4, 28)^2: 28 x 28 = 784 map px inside the canvas, 32 x 32 = 1024 in all.
    "cat" covers [0, 8)^2 of the 32x32 map, [0, 16)^2 at scale 2: 256 px.
    Clipped: 256 / 784 = 0.327 >= 0.3, kept; whole window: 256 / 1024 = 0.25, dropped."""
    maps = torch.zeros(32, 32, 2)
    maps[:8, :8, 0] = 1.0  # "cat": an 8x8 corner block survives the 2-iteration opening
    maps[..., 1] = 1.0     # "sofa": everywhere (a flat map binarises to nothing ...)
    maps[31, 31, 1] = 0.0  # ... so all but one pixel
    layout = WindowLayout((Window(0, 0, 128, 128), Window(80, 80, 128, 128)), 256, 256, pad=16)
    attention = AttentionMaps(maps, ("cat", "sofa"), 4)
    cat = word_masks(attention)[:1]
    assert cat.sum() == 64
    clipped = word_window_fractions(cat, layout, scale=2, latent_per_map=4, border="clipped")
    whole = word_window_fractions(cat, layout, scale=2, latent_per_map=4)
    assert clipped[0].tolist() == [256 / 784, 0.0]
    assert whole[0].tolist() == [256 / 1024, 0.0]
    req = DecomposeRequest("cat sofa", layout, 2, attention)
    assert CrossAttentionDecomposer().decompose(req).prompts == ("sofa", "sofa")
    assert CrossAttentionDecomposer(border="clipped").decompose(req).prompts == ("cat sofa", "sofa")


def create(plugin_options: dict) -> CrossAttentionDecomposer:
    settings = accdiffusion.Settings(prompt="x", plugin_options=plugin_options)
    return host_with(plugin).create("prompt_decomposer", "cross_attention", settings)


def test_border_option_from_settings() -> None:
    assert create({"cross_attention.border": "clipped"}).border == "clipped"
    assert create({}).border == "window"
    with pytest.raises(accdiffusion.SettingsError, match="cross_attention.border='padded'.*one of window, clipped"):
        create({"cross_attention.border": "padded"})
    with pytest.raises(ValueError):
        CrossAttentionDecomposer(border="padded")


def zebra_attention() -> AttentionMaps:
    """Tokens a, z, e, br, a, on, grass of "a zebra on grass" on 32x32 maps: the
    pieces of "zebra" are high on the left half ("z"), the top half ("e") and the
    top-left quadrant ("br", "a"); "grass" on the bottom half; "a" and "on" flat."""
    tokens = torch.zeros(32, 32, 7)
    tokens[:, :16, 1] = 1.0
    tokens[:16, :, 2] = 1.0
    tokens[:16, :16, 3] = 1.0
    tokens[:16, :16, 4] = 1.0
    tokens[16:, :, 6] = 1.0
    groups = ((0,), (1, 2, 3, 4), (5,), (6,))
    maps = torch.stack([tokens[..., list(g)].mean(-1) for g in groups], dim=-1)
    return AttentionMaps(maps, ("a", "zebra", "on", "grass"), 4, token_maps=tokens,
                         tokens=("a", "z", "e", "br", "a", "on", "grass"), groups=groups)


def test_patch_prompts_carry_whole_words() -> None:
    """The mean of the pieces' maps is 1 on the top-left quadrant, 0.25 on the
    top-right and bottom-left ones, 0 elsewhere; its mean is 0.375, so the
    mask of "zebra" is the top-left quadrant (fractions 1, 0.5, 0.5, 0.25 in
    the windows 0, 1, 3, 4). "grass" covers the bottom half (row fractions 0,
    0.5, 1)."""
    attention = zebra_attention()
    masks = word_masks(attention)
    quadrant = torch.zeros(32, 32, dtype=torch.bool)
    quadrant[:16, :16] = True
    assert torch.equal(masks[1], quadrant) and not masks[0].any() and not masks[2].any()
    req = DecomposeRequest("a zebra on grass", grid_layout(2, 32, 4), 2, attention)
    result = CrossAttentionDecomposer().decompose(req)
    assert result.prompts == (
        "zebra", "zebra", "",
        "zebra grass", "grass", "grass",
        "grass", "grass", "grass",
    )
    assert result.words[3] == ("zebra", "grass")


def test_per_token_keeps_the_release_pieces() -> None:
    """One "word" per token, as the release: "z" in the left two columns of
    windows, "e" in the top two rows, "br" and "a" where the quadrant covers
    at least 0.3 (windows 0, 1, 3)."""
    req = DecomposeRequest("a zebra on grass", grid_layout(2, 32, 4), 2, zebra_attention())
    decomposer = CrossAttentionDecomposer(per_token=True)
    result = decomposer.decompose(req)
    assert result.prompts == (
        "z e br a", "z e br a", "e",
        "z e br a grass", "z e grass", "e grass",
        "z grass", "z grass", "grass",
    )
    assert decomposer.word_masks(zebra_attention()).shape == (7, 32, 32)
    # maps built by hand without tokens: per_token changes nothing
    plain = request(cat_dog_maps(), ("cat", "dog"), grid_layout(2, 32, 4))
    assert decomposer.decompose(plain) == CrossAttentionDecomposer().decompose(plain)


@pytest.mark.parametrize("raw, value", [("true", True), ("False", False), ("1", True), ("off", False), (True, True)])
def test_per_token_option_from_settings(raw: str, value: bool) -> None:
    assert create({"cross_attention.per_token": raw}).per_token is value


def test_per_token_default_and_invalid_option() -> None:
    assert create({}).per_token is False
    with pytest.raises(accdiffusion.SettingsError, match="cross_attention.per_token='maybe'"):
        create({"cross_attention.per_token": "maybe"})


def test_attention_maps_from_masks_give_the_masks_back() -> None:
    """The kit's maps from bool masks: binarised at their mean and opened
    (0 iterations on 8x8 maps), each mask comes back as it was."""
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, 5:, 2:7] = True
    assert torch.equal(word_masks(attention_maps("cat dog", masks)), masks)


def test_no_attention_gives_whole_prompt() -> None:
    layout = grid_layout(2, 32, 4)
    req = DecomposeRequest("a cat and a dog", layout, 2, None)
    assert CrossAttentionDecomposer().decompose(req).prompts == ("a cat and a dog",) * 9


def test_empty_prompt() -> None:
    layout = grid_layout(2, 32, 4)
    req = DecomposeRequest("", layout, 2, AttentionMaps(torch.zeros(32, 32, 0), (), 4))
    assert CrossAttentionDecomposer().decompose(req).prompts == ("",) * 9


def test_maps_and_words_must_match() -> None:
    with pytest.raises(ValueError):
        CrossAttentionDecomposer().decompose(request(cat_dog_maps(), ("cat",), grid_layout(2, 32, 4)))


def test_identical() -> None:
    layout = grid_layout(2, 32, 4)
    result = IdenticalDecomposer().decompose(request(cat_dog_maps(), ("cat", "dog"), layout, prompt="a cat"))
    assert result.prompts == ("a cat",) * 9
    assert result.unique() == (("a cat",), (0,) * 9)
