"""Tests of the procedural detector on clean renders."""

from __future__ import annotations

import numpy as np
import pytest
from accdiffusion_shapes import world
from accdiffusion_shapes.detector import classify_shape, detect, hue_degrees


def _scenes(count: int, seed: int) -> list[world.Scene]:
    """``count`` random scenes."""
    rng = np.random.default_rng(seed)
    return [world.random_scene(rng) for _ in range(count)]


@pytest.mark.parametrize("size", [32, 64, 96, 128])
@pytest.mark.parametrize("supersample", [1, 4])
def test_exact_on_clean_renders(size: int, supersample: int) -> None:
    """Every object of a clean render is found with the right shape, colour and size, and nothing else."""
    for scene in _scenes(40, seed=size + supersample):
        found = detect(world.render(scene, size=size, supersample=supersample))
        assert sorted((d.shape, d.color, d.size) for d in found) == sorted(
            (o.shape, o.color, o.size) for o in scene.objects
        )


def test_bounding_boxes_match() -> None:
    """Detected boxes equal the rendered boxes on hard-edged renders."""
    for scene in _scenes(20, seed=5):
        found = detect(world.render(scene, size=64))
        assert sorted(d.bbox for d in found) == sorted(o.bbox(64) for o in scene.objects)


def test_empty_scene_and_array_input() -> None:
    """A background-only image yields nothing; numpy input works like PIL input."""
    for background in world.BACKGROUND_COLORS:
        assert detect(np.asarray(world.render(world.Scene(background, ()), size=48))) == []


def test_reference_size_measures_native_scale() -> None:
    """With ``reference_size`` a native-size object in a 4x canvas is still found and sized."""
    obj = world.SceneObject("circle", "green", "small", 0.3, 0.3)
    native = world.render(world.Scene("white", (obj,)), size=32)
    canvas = world.render(world.Scene("white", ()), size=128)
    canvas.paste(native.crop((8, 8, 20, 20)), (50, 60))
    assert detect(canvas) == []
    found = detect(canvas, reference_size=32)
    assert [(d.shape, d.color, d.size) for d in found] == [("circle", "green", "small")]


def test_shape_thresholds_and_hues() -> None:
    """Ideal fill ratios map to their shapes; primary hues are where expected."""
    assert classify_shape(0.5) == "triangle"
    assert classify_shape(np.pi / 4) == "circle"
    assert classify_shape(1.0) == "square"
    hues = hue_degrees(np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]]))
    assert np.allclose(hues, [0, 120, 240, 0])
