"""Tests of the native-size crops of larger scenes (training data that looks like what windows see)."""

from __future__ import annotations

import numpy as np
import pytest
from accdiffusion_shapes import world

WHITE = world.BACKGROUND_COLORS["white"]


def _scene(*objects: world.SceneObject, background: str = "white") -> world.Scene:
    return world.Scene(background, tuple(objects))


# A small red square at (0.25, 0.25): pixels 32..63 of a 128 px render, 16..31 of a 64 px render.
SQUARE = world.SceneObject("square", "red", "small", 0.25, 0.25)
# A large red circle at (0.25, 0.25): bounding box 32..87 of a 128 px render, centre (59.5, 59.5).
CIRCLE = world.SceneObject("circle", "red", "large", 0.25, 0.25)


def test_a_crop_that_contains_an_object_names_it() -> None:
    """The 16 px square lies wholly inside the crop at (8, 8) of a 64 px render: 256 of 1024 pixels."""
    crop = world.crop_scene(_scene(SQUARE), 64, 8, 8)
    assert crop is not None
    assert crop.visible == (0.25,)
    assert crop.named == (SQUARE,)
    assert world.crop_caption(crop) == "a red square on a white background"
    pixels = np.asarray(world.render_crop(crop))
    assert pixels.shape == (32, 32, 3)
    assert (pixels[8:24, 8:24] == world.OBJECT_COLORS["red"]).all()
    assert (pixels[:8] == WHITE).all() and (pixels[24:] == WHITE).all()


def test_a_crop_cutting_an_object_keeps_its_shape_word() -> None:
    """The crop at (24, 24) of a 128 px render shows the square's 24x24 top-left part (576 pixels)."""
    crop = world.crop_scene(_scene(SQUARE), 128, 24, 24)
    assert crop is not None and crop.visible == (576 / 1024,)
    assert world.crop_caption(crop) == "a red square on a white background"


def test_an_arc_of_a_circle_is_still_a_circle() -> None:
    """A crop at the circle's left edge sees an arc (not a whole circle) and names it a circle."""
    crop = world.crop_scene(_scene(CIRCLE), 128, 16, 44, supersample=2)
    assert crop is not None
    assert 0.05 < crop.visible[0] < 0.5
    assert world.crop_caption(crop) == "a red circle on a white background"
    pixels = np.asarray(world.render_crop(crop, supersample=2)).astype(int)
    red = (np.abs(pixels - world.OBJECT_COLORS["red"]).max(axis=-1) == 0).any(axis=0)
    assert not red[:16].any() and red[16:].all()  # the arc starts at the circle's left edge, column 32 - 16


def test_a_crop_with_only_background_names_only_the_background() -> None:
    """The crop at (64, 64) of a 128 px render misses the square (32..63)."""
    crop = world.crop_scene(_scene(SQUARE), 128, 64, 64)
    assert crop is not None and crop.named == () and crop.visible == (0.0,)
    assert world.crop_caption(crop) == "a white background"
    assert (np.asarray(world.render_crop(crop)) == WHITE).all()
    captions = {world.crop_caption(crop, np.random.default_rng(seed)) for seed in range(20)}
    assert captions == {"a white background", "an empty white background"}


def test_slivers_are_rejected() -> None:
    """Two columns of the square (64 pixels, 6.25%) are named; one column (32 pixels, 3.1%) is a sliver."""
    two = world.crop_scene(_scene(SQUARE), 128, 62, 32)
    assert two is not None and two.named == (SQUARE,) and two.visible == (64 / 1024,)
    assert world.crop_scene(_scene(SQUARE), 128, 63, 32) is None
    assert world.crop_scene(_scene(SQUARE), 128, 63, 32, min_visible=0.03) is not None


def test_named_objects_are_listed_left_to_right() -> None:
    """Two cut objects are named left to right, whatever their order in the scene."""
    square = world.SceneObject("square", "blue", "small", 0.1, 0.1)  # 13..44 x 13..44 at 128 px
    circle = world.SceneObject("circle", "green", "small", 0.45, 0.15)  # 58..89 x 19..50
    crop = world.crop_scene(_scene(circle, square, background="black"), 128, 35, 20)
    assert crop is not None
    assert crop.visible[1] == 10 * 25 / 1024  # columns 35..44, rows 20..44 of the square
    assert crop.named == (square, circle)
    assert world.crop_caption(crop) == "a blue square and a green circle on a black background"


def test_a_crop_leaving_the_render_is_an_error() -> None:
    """Crops lie inside the render."""
    with pytest.raises(ValueError):
        world.crop_scene(_scene(SQUARE), 64, 40, 0)


@pytest.mark.parametrize("seed", range(3))
def test_random_crops_are_native_size_named_and_sliver_free(seed: int) -> None:
    """Random crops: native size, captions in the vocabulary that always name the background, every
    object either named or invisible (the pixels equal a render of the named objects alone)."""
    rng = np.random.default_rng(seed)
    for _ in range(60):
        image, text, crop = world.sample_crop(rng, supersample=2)
        assert image.size == (world.NATIVE_SIZE, world.NATIVE_SIZE)
        assert world.CROP_SCENE_SIZES[0] <= crop.scene_size <= world.CROP_SCENE_SIZES[1]
        assert set(text.split()) <= set(world.VOCABULARY)
        assert text.endswith(f"{crop.scene.background} background")
        assert not {"small", "large"} & set(text.split())
        for share, obj in zip(crop.visible, crop.scene.objects):
            assert share == 0.0 or share >= world.CROP_MIN_VISIBLE
            assert (share > 0) == (obj in crop.named)
        assert text.count(" and ") == max(len(crop.named) - 1, 0)
        only_named = world.Crop(world.Scene(crop.scene.background, crop.named), crop.scene_size, crop.x, crop.y,
                                crop.size, crop.named, ())
        assert np.array_equal(np.asarray(image), np.asarray(world.render_crop(only_named, supersample=2)))


def test_crops_are_deterministic_from_the_seed() -> None:
    """The same seed gives the same crops and captions; another seed gives others."""
    def draw(seed: int) -> list[tuple[bytes, str]]:
        rng = np.random.default_rng(seed)
        return [(image.tobytes(), text) for image, text, _ in (world.sample_crop(rng) for _ in range(10))]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
