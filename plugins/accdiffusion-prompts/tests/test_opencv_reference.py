"""The opening against OpenCV itself, which the AccDiffusion release calls.

OpenCV is a test-only dependency (``requirements-dev.txt``); the plugin does
not need it at run time.
"""

import numpy as np
import pytest
import torch

from accdiffusion_prompts import morphological_open

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])
def test_opening_matches_opencv_morphology_ex(iterations, density):
    rng = np.random.default_rng(iterations * 10 + int(density * 10))
    masks = rng.random((6, 32, 40)) < density
    kernel = np.ones((3, 3), np.uint8)
    expected = np.stack([
        cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, kernel, iterations=iterations) > 0 for m in masks
    ])
    ours = morphological_open(torch.from_numpy(masks), iterations).numpy()
    assert np.array_equal(ours, expected)


def test_opening_matches_opencv_erode_then_dilate_on_border_blocks():
    m = np.zeros((32, 32), np.uint8)
    m[:7, :9] = 1  # touches the top-left border
    m[12:17, 12:17] = 1  # interior 5x5
    m[30, 5] = 1  # isolated pixel on the bottom border
    kernel = np.ones((3, 3), np.uint8)
    expected = cv2.dilate(cv2.erode(m, kernel, iterations=2), kernel, iterations=2) > 0
    ours = morphological_open(torch.from_numpy(m.astype(bool))[None], 2)[0].numpy()
    assert np.array_equal(ours, expected)
    assert ours[:7, :9].all() and ours[12:17, 12:17].all() and not ours[30, 5]
