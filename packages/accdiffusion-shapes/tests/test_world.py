"""Tests of the synthetic shapes world."""

from __future__ import annotations

import numpy as np
import pytest
from accdiffusion_shapes import world


def test_scenes_are_deterministic() -> None:
    """The same seed gives the same scenes, captions and pixels."""
    first = [world.sample(np.random.default_rng(7)) for _ in range(2)]
    image_a, caption_a, scene_a = first[0]
    image_b, caption_b, scene_b = first[1]
    assert scene_a == scene_b
    assert caption_a == caption_b
    assert np.array_equal(np.asarray(image_a), np.asarray(image_b))


def test_different_seeds_differ() -> None:
    """Different seeds give different scene sequences."""
    scenes_a = [world.random_scene(np.random.default_rng(1)) for _ in range(5)]
    scenes_b = [world.random_scene(np.random.default_rng(2)) for _ in range(5)]
    assert scenes_a != scenes_b


def test_palettes_are_disjoint() -> None:
    """Object colours differ from every background colour in name and value."""
    assert not set(world.OBJECT_COLORS) & set(world.BACKGROUND_COLORS)
    assert not set(world.OBJECT_COLORS.values()) & set(world.BACKGROUND_COLORS.values())


@pytest.mark.parametrize("seed", range(5))
def test_objects_do_not_overlap_and_fit(seed: int) -> None:
    """Objects lie inside the image and their bounding boxes are disjoint."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        scene = world.random_scene(rng)
        assert 0 <= len(scene.objects) <= world.MAX_OBJECTS
        boxes = [obj.bbox(world.NATIVE_SIZE) for obj in scene.objects]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= world.NATIVE_SIZE and 0 <= y0 < y1 <= world.NATIVE_SIZE
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_captions_agree_with_scenes() -> None:
    """Captions use the vocabulary and name the background and every object left to right."""
    rng = np.random.default_rng(3)
    seen_counts = set()
    for _ in range(300):
        scene = world.random_scene(rng)
        text = world.caption(scene, rng)
        seen_counts.add(len(scene.objects))
        assert set(text.split()) <= set(world.VOCABULARY)
        assert text.endswith(f"{scene.background} background")
        if not scene.objects:
            assert text in (f"a {scene.background} background", f"an empty {scene.background} background")
            continue
        phrases = text.rsplit(" on ", 1)[0].split(" and ")
        ordered = sorted(scene.objects, key=lambda obj: obj.x)
        assert len(phrases) == len(ordered)
        for phrase, obj in zip(phrases, ordered):
            words = phrase.split()
            assert words[0] == "a" and words[-2:] == [obj.color, obj.shape]
            assert words[1:-2] in ([], [obj.size])
    assert seen_counts == set(range(world.MAX_OBJECTS + 1))


def test_caption_without_rng_names_sizes() -> None:
    """Without a generator captions are fixed and always name the size."""
    scene = world.Scene(
        background="white",
        objects=(
            world.SceneObject("square", "blue", "large", 0.5, 0.1),
            world.SceneObject("circle", "red", "small", 0.1, 0.1),
        ),
    )
    assert world.caption(scene) == "a small red circle and a large blue square on a white background"
    assert world.caption(world.Scene("gray", ())) == "a gray background"


@pytest.mark.parametrize("size", [32, 64, 100])
def test_render_sizes_and_colors(size: int) -> None:
    """Renders have the requested size, the background colour at the corners and object colour inside."""
    scene = world.Scene("black", (world.SceneObject("square", "yellow", "large", 0.25, 0.25),))
    pixels = np.asarray(world.render(scene, size=size, supersample=2))
    assert pixels.shape == (size, size, 3)
    assert tuple(pixels[0, 0]) == world.BACKGROUND_COLORS["black"]
    assert tuple(pixels[size // 2, size // 2]) == world.OBJECT_COLORS["yellow"]
