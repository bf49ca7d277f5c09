"""Sliding windows over a latent canvas (MultiDiffusion views, DemoFusion jitter).

The local path of DemoFusion (Du et al., CVPR 2024) and AccDiffusion
(Lin et al., ECCV 2024) denoises overlapping native-size windows and
averages them (MultiDiffusion, Bar-Tal et al., ICML 2023). DemoFusion adds a
random jitter to the windows so that their seams move from step to step.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch
from accdiffusion import Window, WindowLayout
from accdiffusion.options import option


def axis_starts(side: int, window: int, stride: int) -> torch.Tensor:
    """Start coordinates of the windows along one axis of length ``side``.

    One window if ``side <= window``, else ``ceil((side - window) / stride) + 1``
    windows; window ``k`` starts at ``k * stride``, and a window that would end
    past the border is moved back to end exactly at it. The window size along
    the axis is ``min(window, side)``. Returns an ``int64`` tensor.
    """
    size = min(window, side)
    count = 1 if side <= window else -(-(side - window) // stride) + 1
    return (torch.arange(count, dtype=torch.int64) * stride).clamp(max=side - size)


def jitter_bounds(starts: torch.Tensor, size: int, side: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive bounds ``(low, high)`` of each window's random shift along one axis.

    DemoFusion's jitter: ``[-r, r]`` for a window touching neither
    border, ``[-r, 0]`` for one starting at 0, ``[0, r]`` for one ending at the
    far border, ``0`` for one spanning the whole axis. Border windows move only
    outwards, into the padding, so the canvas stays covered.
    """
    at_start = starts == 0
    at_end = starts + size == side
    low = torch.where(at_end, 0, -radius)
    high = torch.where(at_start, 0, radius)
    return low, high


@attrs.frozen
class SlidingWindowTiler:
    """The ``sliding_window`` tiler: a regular grid of windows, optionally jittered.

    ``jitter``: shift the windows at random (DemoFusion) when ``layout`` gets a
    generator; the layout is then padded by ``r = (window - stride) // 4``.
    """

    jitter: bool = option(True, aliases=("jitter",), help="random jitter of the local windows (DemoFusion)")

    def layout(
        self,
        height: int,
        width: int,
        window: int,
        stride: int,
        generator: Optional[torch.Generator],
    ) -> WindowLayout:
        """Windows covering a ``height x width`` latent canvas, row-major.

        Each window is ``min(window, height) x min(window, width)``. With jitter
        and a generator, every window is shifted by a uniform random integer per
        axis within :func:`jitter_bounds`, and the coordinates are given on the
        canvas padded by ``r`` (moved by ``+r``). Raises ``ValueError`` for
        non-positive sizes or a stride outside ``[1, window]``.
        """
        if height < 1 or width < 1 or window < 1:
            raise ValueError(f"canvas {height}x{width} and window {window} must be positive")
        if not 1 <= stride <= window:
            raise ValueError(f"stride {stride} must be in [1, window={window}]")
        win_h, win_w = min(window, height), min(window, width)
        tops = axis_starts(height, window, stride)
        lefts = axis_starts(width, window, stride)
        grid_top, grid_left = torch.meshgrid(tops, lefts, indexing="ij")
        grid_top, grid_left = grid_top.reshape(-1), grid_left.reshape(-1)

        pad = (window - stride) // 4 if self.jitter and generator is not None else 0
        if pad > 0:
            low_y, high_y = jitter_bounds(grid_top, win_h, height, pad)
            low_x, high_x = jitter_bounds(grid_left, win_w, width, pad)
            low = torch.stack([low_y, low_x], dim=1)
            high = torch.stack([high_y, high_x], dim=1)
            uniform = torch.rand(low.shape, generator=generator, device=generator.device, dtype=torch.float64)
            shift = low + (uniform.to(low.device) * (high - low + 1)).floor().to(torch.int64)
            grid_top = grid_top + shift[:, 0] + pad
            grid_left = grid_left + shift[:, 1] + pad

        windows = tuple(
            Window(top, left, win_h, win_w) for top, left in zip(grid_top.tolist(), grid_left.tolist())
        )
        return WindowLayout(windows, height, width, pad)
