"""Hand-worked tests of the speckle and grey-tile measures."""

from __future__ import annotations

import numpy as np
import pytest
from accdiffusion_shapes import quality, world

GREY = (128, 128, 128)


def _render(*objects: world.SceneObject, background: str = "white", size: int = 32, supersample: int = 1):
    return np.asarray(world.render(world.Scene(background, tuple(objects)), size=size, supersample=supersample)).copy()


@pytest.mark.parametrize("size", [32, 96, 128])
@pytest.mark.parametrize("seed", range(4))
def test_clean_renders_have_no_speckle_and_no_grey_tiles(size: int, seed: int) -> None:
    """Anti-aliased renders of random scenes: the rims of objects are not speckle."""
    rng = np.random.default_rng(seed)
    for _ in range(10):
        scene = world.random_scene(rng)
        image = world.render(scene, size=size, supersample=2)
        result = quality.measure(image, native=32, background=scene.background)
        assert result["speckle"] == 0.0 and result["grey_tiles"] == 0, scene
        assert quality.speckle(image) == 0.0  # background estimated from the border


def test_k_planted_pixels_give_k_over_n() -> None:
    """A small red square (8x8 at 8..15) grown by one pixel covers 10x10 = 100 pixels: N = 1024 - 100 = 924.
    Five grey pixels and one 2x2 red speck (4 pixels, under the 1% object area) away from it: 9 / 924."""
    image = _render(world.SceneObject("square", "red", "small", 0.25, 0.25))
    assert quality.object_mask(image).sum() == 100
    for y, x in [(0, 0), (30, 2), (25, 25), (5, 30), (20, 3)]:
        image[y, x] = GREY
    assert quality.speckle(image, "white") == 5 / 924
    image[28:30, 10:12] = world.OBJECT_COLORS["red"]
    assert quality.speckle(image, "white") == 9 / 924
    image[2, 20] = (235, 235, 235)  # 20 levels off: not speckle
    assert quality.speckle(image, "white") == 9 / 924


def test_speckle_is_measured_against_the_named_background() -> None:
    """A grey image named white is all speckle; estimated from its border it has none."""
    image = _render(background="gray")
    assert quality.speckle(image, "white") == 1.0
    assert quality.speckle(image) == 0.0 and quality.speckle(image, (128, 128, 128)) == 0.0


def test_a_planted_grey_square_is_one_grey_tile() -> None:
    """A 32x32 grey square in cell (row 1, column 2) of a white 128 px image: 1 tile of 16 cells."""
    image = _render(size=128)
    image[32:64, 64:96] = GREY
    assert quality.grey_tiles(image, 32, "white") == (1, 16)
    result = quality.measure(image, native=32, background="white")
    assert (result["grey_tiles"], result["tile_cells"], result["grey_tile_share"]) == (1, 16, 1 / 16)
    assert result["speckle"] == 1024 / (128 * 128)


def test_a_grey_square_off_the_grid_counts_where_it_covers_enough() -> None:
    """At (40..71, 40..71) it covers 24x24 = 56% of cell (1, 1): mean 71 levels off, a tile; 8x24 = 19% of
    cells (1, 2) and (2, 1): 24 levels, not a tile; 8x8 of cell (2, 2): not a tile."""
    image = _render(size=128, background="black")
    image[40:72, 40:72] = GREY
    assert quality.grey_tiles(image, 32, "black") == (1, 16)


def test_cells_mostly_covered_by_objects_are_not_eligible() -> None:
    """A large square (56x56 at 32..87) grown by one pixel leaves cells (1, 1) and (1, 2), (2, 1), (2, 2)
    with under half background: 12 eligible cells, no tile; the object's own colour is no tile."""
    image = _render(world.SceneObject("square", "blue", "large", 0.25, 0.25), size=128)
    assert quality.grey_tiles(image, 32, "white") == (0, 12)
    assert quality.measure(image, 32, "white")["speckle"] == 0.0


def test_command_line_prints_each_images_measures(tmp_path, capsys) -> None:
    """``python -m accdiffusion_shapes.quality``: the planted case above through the command line, and an
    unreadable file refused with exit code 2 and its name."""
    image = _render(world.SceneObject("square", "red", "small", 0.25, 0.25))
    for y, x in [(0, 0), (30, 2), (25, 25), (5, 30), (20, 3)]:
        image[y, x] = GREY
    path = tmp_path / "planted.png"
    from PIL import Image

    Image.fromarray(image).save(path)
    assert quality.main([str(path), "--background", "white"]) == 0
    assert capsys.readouterr().out == f"{path}: speckle {100 * 5 / 924:.2f}%, grey tiles 0 of 1 cells\n"
    assert quality.main([str(path), "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["speckle"] == 5 / 924
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert quality.main([str(tmp_path / "broken.png")]) == 2
    assert "broken.png" in capsys.readouterr().err
