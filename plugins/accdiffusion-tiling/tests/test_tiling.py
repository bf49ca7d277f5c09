"""Tests of the sliding-window tiler against hand-worked layouts, and the tiler contract."""

from __future__ import annotations

import accdiffusion
import pytest
import torch
from accdiffusion import Window, WindowLayout
from accdiffusion_testing.kit import TilerContract, host_with

from accdiffusion_tiling import SlidingWindowTiler, axis_starts, jitter_bounds
from accdiffusion_tiling.plugin import plugin


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def boxes(layout: WindowLayout) -> list[tuple[int, int, int, int]]:
    return [(w.top, w.left, w.height, w.width) for w in layout.windows]


class TestSlidingWindowContract(TilerContract):
    plugin = plugin
    name = "sliding_window"
    entry_point = "tiling"


class TestSlidingWindowWithoutJitterContract(TilerContract):
    plugin = plugin
    name = "sliding_window"
    entry_point = "tiling"
    options = {"jitter": False}


@pytest.mark.parametrize("options, jitter", [({}, True), ({"jitter": "false"}, False),
                                             ({"sliding_window.jitter": "off"}, False)])
def test_jitter_option(options: dict, jitter: bool) -> None:
    settings = accdiffusion.Settings(prompt="x", plugin_options=options)
    assert host_with(plugin).create("tiler", "sliding_window", settings) == SlidingWindowTiler(jitter=jitter)


def test_axis_starts_hand_worked() -> None:
    # ceil((40 - 16) / 8) + 1 = 4 windows at 0, 8, 16, 24.
    assert axis_starts(40, 16, 8).tolist() == [0, 8, 16, 24]
    # ceil((36 - 16) / 8) + 1 = 4 windows; the last (24) is moved back to 36 - 16 = 20.
    assert axis_starts(36, 16, 8).tolist() == [0, 8, 16, 20]
    assert axis_starts(16, 16, 8).tolist() == [0]
    assert axis_starts(10, 16, 8).tolist() == [0]
    # stride equal to the window: ceil(17 / 16) + 1 = 3 windows, last at 33 - 16 = 17.
    assert axis_starts(33, 16, 16).tolist() == [0, 16, 17]


def test_layout_24x40_window16_stride8() -> None:
    layout = SlidingWindowTiler(jitter=False).layout(24, 40, 16, 8, None)
    assert layout.pad == 0
    assert (layout.canvas_height, layout.canvas_width) == (24, 40)
    assert boxes(layout) == [
        (0, 0, 16, 16), (0, 8, 16, 16), (0, 16, 16, 16), (0, 24, 16, 16),
        (8, 0, 16, 16), (8, 8, 16, 16), (8, 16, 16, 16), (8, 24, 16, 16),
    ]


def test_layout_canvas_equal_to_window() -> None:
    layout = SlidingWindowTiler(jitter=False).layout(16, 16, 16, 8, None)
    assert boxes(layout) == [(0, 0, 16, 16)]


def test_layout_canvas_smaller_than_window_is_one_clipped_window() -> None:
    layout = SlidingWindowTiler(jitter=False).layout(10, 12, 16, 8, None)
    assert boxes(layout) == [(0, 0, 10, 12)]


def test_layout_one_axis_clipped() -> None:
    # rows: one window of 10; cols: ceil((20 - 16) / 8) + 1 = 2 windows at 0 and 20 - 16 = 4.
    layout = SlidingWindowTiler(jitter=False).layout(10, 20, 16, 8, None)
    assert boxes(layout) == [(0, 0, 10, 16), (0, 4, 10, 16)]


def test_jitter_without_generator_is_plain_layout() -> None:
    plain = SlidingWindowTiler(jitter=False).layout(24, 40, 16, 8, None)
    assert SlidingWindowTiler(jitter=True).layout(24, 40, 16, 8, None) == plain


def test_jitter_off_ignores_generator() -> None:
    plain = SlidingWindowTiler(jitter=False).layout(24, 40, 16, 8, None)
    assert SlidingWindowTiler(jitter=False).layout(24, 40, 16, 8, gen(0)) == plain


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_window_count_for_scaled_canvas(s: int) -> None:
    layout = SlidingWindowTiler(jitter=True).layout(s * 16, s * 16, 16, 8, gen(s))
    assert len(layout) == (2 * s - 1) ** 2


SIZES = [(1, 1), (7, 5), (16, 16), (17, 16), (24, 40), (33, 70), (64, 48), (100, 129)]
STRIDES = [1, 3, 4, 8, 11, 16]


@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("height,width", SIZES)
def test_full_coverage_and_containment(jitter: bool, height: int, width: int) -> None:
    tiler = SlidingWindowTiler(jitter=jitter)
    for stride in STRIDES:
        for seed in range(3):
            layout = tiler.layout(height, width, 16, stride, gen(seed))
            assert layout.pad == ((16 - stride) // 4 if jitter else 0)
            assert bool((layout.coverage() >= 1).all()), (height, width, stride, seed)
            padded_h, padded_w = height + 2 * layout.pad, width + 2 * layout.pad
            for w in layout.windows:
                assert (w.height, w.width) == (min(16, height), min(16, width))
                assert 0 <= w.top and w.bottom <= padded_h
                assert 0 <= w.left and w.right <= padded_w


def test_jitter_bounds_hand_worked() -> None:
    starts = axis_starts(40, 16, 8)  # 0, 8, 16, 24 (the last ends at 40)
    low, high = jitter_bounds(starts, 16, 40, 2)
    assert low.tolist() == [-2, -2, -2, 0]
    assert high.tolist() == [0, 2, 2, 2]
    low, high = jitter_bounds(torch.tensor([0]), 16, 16, 2)
    assert (low.tolist(), high.tolist()) == ([0], [0])


def test_jitter_shifts_within_bounds() -> None:
    plain = SlidingWindowTiler(jitter=False).layout(24, 40, 16, 8, None)
    r = (16 - 8) // 4
    tops = axis_starts(24, 16, 8)
    lefts = axis_starts(40, 16, 8)
    low_y, high_y = jitter_bounds(tops, 16, 24, r)
    low_x, high_x = jitter_bounds(lefts, 16, 40, r)
    seen_y: set[int] = set()
    seen_x: set[int] = set()
    for seed in range(200):
        layout = SlidingWindowTiler(jitter=True).layout(24, 40, 16, 8, gen(seed))
        assert layout.pad == r
        for k, (w, p) in enumerate(zip(layout.on_canvas(), plain.windows)):
            dy, dx = w.top - p.top, w.left - p.left
            row, col = divmod(k, 4)
            assert int(low_y[row]) <= dy <= int(high_y[row])
            assert int(low_x[col]) <= dx <= int(high_x[col])
            if (row, col) == (1, 1):
                seen_y.add(dy)
            if (row, col) == (0, 1):
                seen_x.add(dx)
    # every integer of the interior column range [-2, 2] occurs; the last row only moves down
    assert seen_x == {-2, -1, 0, 1, 2}
    assert seen_y == {0, 1, 2}


def test_window_spanning_an_axis_is_not_shifted() -> None:
    for seed in range(20):
        layout = SlidingWindowTiler(jitter=True).layout(16, 40, 16, 8, gen(seed))
        assert all(w.top == 0 for w in layout.on_canvas())


def test_reproducible_from_seed() -> None:
    tiler = SlidingWindowTiler(jitter=True)
    assert tiler.layout(64, 96, 16, 8, gen(7)) == tiler.layout(64, 96, 16, 8, gen(7))


def test_different_seeds_give_different_layouts() -> None:
    tiler = SlidingWindowTiler(jitter=True)
    layouts = {boxes(tiler.layout(64, 96, 16, 8, gen(seed))).__repr__() for seed in range(5)}
    assert len(layouts) == 5


def test_stride_equal_to_window_has_no_jitter_padding() -> None:
    layout = SlidingWindowTiler(jitter=True).layout(32, 32, 16, 16, gen(0))
    assert layout.pad == 0
    assert boxes(layout) == [(0, 0, 16, 16), (0, 16, 16, 16), (16, 0, 16, 16), (16, 16, 16, 16)]


@pytest.mark.parametrize("args", [(0, 8, 16, 8), (8, 8, 0, 1), (32, 32, 16, 0), (32, 32, 16, 17)])
def test_invalid_arguments(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        SlidingWindowTiler(jitter=False).layout(*args, None)


def test_window_type() -> None:
    layout = SlidingWindowTiler(jitter=True).layout(24, 24, 16, 8, gen(1))
    assert all(isinstance(w, Window) and isinstance(w.top, int) for w in layout.windows)
