"""The synthetic "shapes world": random scenes, their renderings and captions.

A scene is a plain background colour with zero to three non-overlapping
objects.  Every object has a shape, a colour and a size.  Geometry is stored in
relative units (fractions of the image side) so that one scene can be rendered
at any resolution.  Everything is deterministic given a
:class:`numpy.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
"""Object shapes."""

OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (30, 170, 60),
    "blue": (40, 70, 230),
    "yellow": (245, 205, 20),
}
"""Object colour names and their RGB values."""

BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "black": (0, 0, 0),
}
"""Background colour names and their RGB values (disjoint from object colours)."""

SIZES: dict[str, float] = {"small": 0.25, "large": 0.4375}
"""Object size names and their side length as a fraction of the image side."""

MAX_OBJECTS = 3
"""Largest number of objects in a scene."""

OBJECT_COUNT_PROBS: tuple[float, ...] = (0.2, 0.4, 0.25, 0.15)
"""Default probabilities of a scene holding 0, 1, 2 or 3 objects."""

VOCABULARY: tuple[str, ...] = (
    "a",
    "an",
    "and",
    "on",
    "empty",
    "background",
    *SHAPES,
    *OBJECT_COLORS,
    *BACKGROUND_COLORS,
    *SIZES,
)
"""Every word that can appear in a caption."""

NATIVE_SIZE = 32
"""Native image side in pixels of the shipped model."""


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene.

    Attributes:
        shape: One of :data:`SHAPES`.
        color: One of the keys of :data:`OBJECT_COLORS`.
        size: One of the keys of :data:`SIZES`.
        x: Left edge of the object's bounding box, as a fraction of the image side.
        y: Top edge of the object's bounding box, as a fraction of the image side.
    """

    shape: str
    color: str
    size: str
    x: float
    y: float

    @property
    def extent(self) -> float:
        """Side of the (square) bounding box as a fraction of the image side."""
        return SIZES[self.size]

    def bbox(self, image_size: int) -> tuple[int, int, int, int]:
        """Pixel bounding box ``(x0, y0, x1, y1)`` (exclusive end) at ``image_size``."""
        x0 = round(self.x * image_size)
        y0 = round(self.y * image_size)
        side = round(self.extent * image_size)
        return x0, y0, x0 + side, y0 + side

    def phrase(self, with_size: bool) -> str:
        """Noun phrase describing the object, e.g. ``"a small red circle"``."""
        words = [self.size] if with_size else []
        words += [self.color, self.shape]
        return "a " + " ".join(words)


@dataclass(frozen=True)
class Scene:
    """A background colour and a tuple of non-overlapping objects."""

    background: str
    objects: tuple[SceneObject, ...]


def _overlaps(a: SceneObject, b: SceneObject, margin: float) -> bool:
    """Whether the bounding boxes of ``a`` and ``b`` come closer than ``margin``."""
    return not (
        a.x + a.extent + margin <= b.x
        or b.x + b.extent + margin <= a.x
        or a.y + a.extent + margin <= b.y
        or b.y + b.extent + margin <= a.y
    )


def random_scene(
    rng: np.random.Generator,
    count_probs: tuple[float, ...] = OBJECT_COUNT_PROBS,
    margin: float = 1.0 / 16.0,
    border: float = 1.0 / 16.0,
) -> Scene:
    """Draw a random scene.

    Args:
        rng: Source of randomness; the scene is a pure function of its state.
        count_probs: Probabilities of 0, 1, ... objects (at most
            :data:`MAX_OBJECTS` + 1 entries, normalised here).
        margin: Minimum gap between two objects, as a fraction of the image side.
        border: Minimum gap between an object and the image border.

    Returns:
        A scene whose objects do not overlap and stay inside the border.
    """
    probs = np.asarray(count_probs, dtype=float)
    if len(probs) > MAX_OBJECTS + 1:
        raise ValueError(f"at most {MAX_OBJECTS + 1} count probabilities are allowed")
    background = str(rng.choice(list(BACKGROUND_COLORS)))
    count = int(rng.choice(len(probs), p=probs / probs.sum()))
    while True:
        objects: list[SceneObject] = []
        for _ in range(count):
            size = str(rng.choice(list(SIZES)))
            high = 1.0 - border - SIZES[size]
            for _attempt in range(50):
                candidate = SceneObject(
                    shape=str(rng.choice(SHAPES)),
                    color=str(rng.choice(list(OBJECT_COLORS))),
                    size=size,
                    x=float(rng.uniform(border, high)),
                    y=float(rng.uniform(border, high)),
                )
                if not any(_overlaps(candidate, other, margin) for other in objects):
                    objects.append(candidate)
                    break
            else:
                break
        if len(objects) == count:
            return Scene(background=background, objects=tuple(objects))


def _article(word: str) -> str:
    """Indefinite article for ``word``."""
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """Describe a scene in words from :data:`VOCABULARY`.

    Objects are listed left to right.  With ``rng`` the wording varies: object
    sizes are named or left out (one coin flip per object), and an empty scene is
    called ``"a <colour> background"`` or ``"an empty <colour> background"``.
    Without ``rng`` sizes are always named and an empty scene is
    ``"a <colour> background"``.

    Args:
        scene: The scene to describe.
        rng: Optional source of randomness for the wording.

    Returns:
        A caption such as ``"a small red circle and a blue square on a white
        background"``.
    """
    if not scene.objects:
        if rng is not None and rng.random() < 0.5:
            return f"an empty {scene.background} background"
        return f"{_article(scene.background)} {scene.background} background"
    ordered = sorted(scene.objects, key=lambda obj: obj.x)
    phrases = [obj.phrase(with_size=rng is None or bool(rng.random() < 0.5)) for obj in ordered]
    return " and ".join(phrases) + f" on {_article(scene.background)} {scene.background} background"


def render(scene: Scene, size: int = NATIVE_SIZE, supersample: int = 1) -> Image.Image:
    """Render a scene as an RGB image.

    Args:
        scene: The scene to draw.
        size: Side of the square output image in pixels.
        supersample: Draw at ``supersample`` times the size and downscale with a
            box filter, which anti-aliases edges; 1 gives hard edges.

    Returns:
        The rendered ``size`` x ``size`` RGB image.
    """
    canvas = size * supersample
    image = Image.new("RGB", (canvas, canvas), BACKGROUND_COLORS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, x1, y1 = (v * supersample for v in obj.bbox(size))
        fill = OBJECT_COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    if supersample > 1:
        image = image.resize((size, size), Image.Resampling.BOX)
    return image


def sample(
    rng: np.random.Generator,
    size: int = NATIVE_SIZE,
    supersample: int = 1,
    count_probs: tuple[float, ...] = OBJECT_COUNT_PROBS,
) -> tuple[Image.Image, str, Scene]:
    """Draw a random scene and return its rendering, a caption and the scene itself."""
    scene = random_scene(rng, count_probs=count_probs)
    return render(scene, size=size, supersample=supersample), caption(scene, rng), scene
