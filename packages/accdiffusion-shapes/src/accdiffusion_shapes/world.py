"""The synthetic "shapes world": random scenes, their renderings and captions.

A scene is a plain background colour with zero to three non-overlapping
objects.  Every object has a shape, a colour and a size.  Geometry is stored in
relative units (fractions of the image side) so that one scene can be rendered
at any resolution.  Everything is deterministic given a
:class:`numpy.random.Generator`.
"""

from __future__ import annotations

import re
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


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, size: int, supersample: int, fill) -> None:
    """Draw ``obj`` of an image of side ``size`` on a canvas ``supersample`` times larger."""
    x0, y0, x1, y1 = (v * supersample for v in obj.bbox(size))
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)


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
        _draw_object(draw, obj, size, supersample, OBJECT_COLORS[obj.color])
    if supersample > 1:
        image = image.resize((size, size), Image.Resampling.BOX)
    return image


def coverage(obj: SceneObject, size: int = NATIVE_SIZE, supersample: int = 1) -> np.ndarray:
    """Share of each pixel that ``obj`` covers in a render of side ``size``.

    The object is drawn exactly as :func:`render` draws it, so a pixel of the
    render differs from the background exactly where the coverage is above 0.

    Returns:
        A ``(size, size)`` float array in ``[0, 1]``.
    """
    canvas = size * supersample
    mask = Image.new("L", (canvas, canvas), 0)
    _draw_object(ImageDraw.Draw(mask), obj, size, supersample, 255)
    if supersample > 1:
        mask = mask.resize((size, size), Image.Resampling.BOX)
    return np.asarray(mask, dtype=np.float64) / 255.0


def sample(
    rng: np.random.Generator,
    size: int = NATIVE_SIZE,
    supersample: int = 1,
    count_probs: tuple[float, ...] = OBJECT_COUNT_PROBS,
) -> tuple[Image.Image, str, Scene]:
    """Draw a random scene and return its rendering, a caption and the scene itself."""
    scene = random_scene(rng, count_probs=count_probs)
    return render(scene, size=size, supersample=supersample), caption(scene, rng), scene


CROP_SCENE_SIZES: tuple[int, int] = (2 * NATIVE_SIZE, 4 * NATIVE_SIZE)
"""Smallest and largest side (pixels, inclusive) of the scenes that crops are cut from."""

CROP_MIN_VISIBLE = 0.05
"""An object is named in a crop's caption when its visible area is at least this
share of the crop's area (at 32 px: 51.2 pixels, e.g. a 7x7 corner or a strip
two pixels deep along a whole side).  Objects with a visible area above 0 and
below this are *slivers*: :func:`sample_crop` never returns a crop with one."""

CROP_COUNT_PROBS: tuple[float, ...] = (0.1, 0.3, 0.3, 0.3)
"""Probabilities of 0-3 objects in the scenes that crops are cut from: more
objects than whole scenes, since a native-size crop of a 2x-4x scene misses
most of them."""


@dataclass(frozen=True)
class Crop:
    """A native-size window of a scene rendered larger, with what it shows.

    Attributes:
        scene: The whole scene.
        scene_size: Side in pixels of the render the crop is cut from.
        x: Left edge of the crop in the render, in pixels.
        y: Top edge of the crop in the render, in pixels.
        size: Side of the crop in pixels.
        named: The objects with enough of them visible to be named, in
            caption order (left to right by their visible part).
        visible: Visible area of each object of ``scene.objects`` (same
            order) as a share of the crop's area (anti-aliased coverage).
    """

    scene: Scene
    scene_size: int
    x: int
    y: int
    size: int
    named: tuple[SceneObject, ...]
    visible: tuple[float, ...]


def crop_scene(
    scene: Scene,
    scene_size: int,
    x: int,
    y: int,
    size: int = NATIVE_SIZE,
    supersample: int = 1,
    min_visible: float = CROP_MIN_VISIBLE,
    masks: list[np.ndarray] | None = None,
) -> Crop | None:
    """The window of a render of ``scene`` at ``(x, y)``, or ``None`` when it shows a sliver.

    Args:
        scene: The scene.
        scene_size: Side of the render the crop is cut from.
        x: Left edge of the crop.
        y: Top edge of the crop.
        size: Side of the crop.
        supersample: Anti-aliasing factor of the render.
        min_visible: Visible share of the crop's area for an object to be named.
        masks: The objects' :func:`coverage` at ``scene_size`` (computed when
            not given).

    Returns:
        The :class:`Crop`, whose named objects are those covering at least
        ``min_visible`` of it, or ``None`` when an object covers more than
        nothing and less than that.
    """
    if not (0 <= x <= scene_size - size and 0 <= y <= scene_size - size):
        raise ValueError(f"crop {size} at ({x}, {y}) leaves the render of side {scene_size}")
    if masks is None:
        masks = [coverage(obj, scene_size, supersample) for obj in scene.objects]
    windows = [mask[y : y + size, x : x + size] for mask in masks]
    visible = tuple(float(window.sum()) / (size * size) for window in windows)
    if any(0.0 < share < min_visible for share in visible):
        return None
    lefts = [int(np.flatnonzero(window.max(axis=0) > 0)[0]) if share else size for window, share in zip(windows, visible)]
    order = sorted((left, index) for index, (left, share) in enumerate(zip(lefts, visible)) if share)
    return Crop(scene, scene_size, x, y, size, tuple(scene.objects[index] for _, index in order), visible)


def render_crop(crop: Crop, supersample: int = 1) -> Image.Image:
    """The pixels of ``crop``: its window of the scene rendered at ``crop.scene_size``."""
    image = render(crop.scene, size=crop.scene_size, supersample=supersample)
    return image.crop((crop.x, crop.y, crop.x + crop.size, crop.y + crop.size))


def crop_caption(crop: Crop, rng: np.random.Generator | None = None) -> str:
    """Describe a crop: its named objects by colour and shape, and always the background.

    Sizes are left out: "small" and "large" refer to the whole image, which a
    crop does not show.  An object cut by the crop's edge keeps the word of the
    shape it belongs to (an arc of a circle is "a red circle").  With ``rng``
    an empty crop is ``"a <colour> background"`` or ``"an empty <colour>
    background"`` (one coin flip), as for whole scenes.
    """
    background = crop.scene.background
    if not crop.named:
        if rng is not None and rng.random() < 0.5:
            return f"an empty {background} background"
        return f"{_article(background)} {background} background"
    phrases = [obj.phrase(with_size=False) for obj in crop.named]
    return " and ".join(phrases) + f" on {_article(background)} {background} background"


def sample_crop(
    rng: np.random.Generator,
    size: int = NATIVE_SIZE,
    supersample: int = 1,
    scene_sizes: tuple[int, int] = CROP_SCENE_SIZES,
    min_visible: float = CROP_MIN_VISIBLE,
    count_probs: tuple[float, ...] = CROP_COUNT_PROBS,
    tries: int = 20,
) -> tuple[Image.Image, str, Crop]:
    """Draw a random crop of a random scene rendered larger, with its caption.

    A scene is drawn, rendered at a side drawn uniformly from ``scene_sizes``
    (inclusive), and a ``size`` x ``size`` window at a uniform position is cut
    out.  Each object is named when at least ``min_visible`` of the crop's area
    shows it, and absent when none of it is visible; a window showing a sliver
    (more than nothing, less than ``min_visible``) is rejected and another
    position drawn (after ``tries`` rejections, another scene), so no crop
    holds coloured pixels that its caption does not name.

    Args:
        rng: Source of randomness; the crop is a pure function of its state.
        size: Side of the crop (the model's native side).
        supersample: Anti-aliasing factor of the render.
        scene_sizes: Range of the render's side.
        min_visible: Visible share of the crop's area for an object to be named.
        count_probs: Probabilities of 0-3 objects in the scene.
        tries: Window positions tried per scene.

    Returns:
        The crop as an RGB image, its caption and the :class:`Crop`.
    """
    low, high = scene_sizes
    if low < size:
        raise ValueError(f"scenes of side {low} are smaller than the crop ({size})")
    while True:
        scene = random_scene(rng, count_probs=count_probs)
        scene_size = int(rng.integers(low, high + 1))
        masks = [coverage(obj, scene_size, supersample) for obj in scene.objects]
        for _ in range(tries):
            x, y = (int(v) for v in rng.integers(0, scene_size - size + 1, size=2))
            crop = crop_scene(scene, scene_size, x, y, size, supersample, min_visible, masks)
            if crop is not None:
                return render_crop(crop, supersample), crop_caption(crop, rng), crop


class PromptError(ValueError):
    """A prompt with words outside :data:`VOCABULARY` or outside the caption grammar."""


def prompt_words(text: str) -> list[str]:
    """The words of ``text`` as the tokenizer sees them: lower-cased runs of letters, and every other
    non-space character (punctuation, digits) on its own."""
    return re.findall(r"[a-z]+|[^\sa-z]", text.lower())


def unknown_words(text: str) -> list[str]:
    """The words of ``text`` outside :data:`VOCABULARY`, each once, in order of appearance."""
    unknown: list[str] = []
    for word in prompt_words(text):
        if word not in VOCABULARY and word not in unknown:
            unknown.append(word)
    return unknown


def check_vocabulary(text: str, what: str = "prompt") -> None:
    """Raise :class:`PromptError` naming every word of ``text`` outside :data:`VOCABULARY`.

    Args:
        text: The prompt.
        what: How the message calls the text (e.g. ``"negative prompt"``).
    """
    unknown = unknown_words(text)
    if unknown:
        names = ", ".join(repr(word) for word in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise PromptError(
            f"{what} {text!r}: word{plural} {names} not in the shapes world's vocabulary "
            f"({' '.join(VOCABULARY)}); the model knows no other word"
        )


@dataclass(frozen=True)
class PromptObject:
    """An object named by a prompt: colour, shape and size (``None`` when the prompt names none)."""

    color: str
    shape: str
    size: str | None = None


def parse_prompt(text: str) -> tuple[str | None, tuple[PromptObject, ...]]:
    """Read a prompt written in the caption grammar.

    The grammar is that of :func:`caption` and :func:`crop_caption`:
    ``"<object> and <object> ... on a <background> background"``, where an
    object is ``"a [small|large] <colour> <shape>"``, or a background alone,
    ``"a <background> background"`` / ``"an empty <background> background"``;
    the background may be left out (``"a red circle"``), and ``a`` / ``an``
    are interchangeable.

    Returns:
        The background colour (``None`` when not named) and the named objects
        in order.

    Raises:
        PromptError: A word is outside :data:`VOCABULARY` or the words do not
            follow the grammar.
    """
    check_vocabulary(text)
    words = prompt_words(text)

    def fail(reason: str) -> PromptError:
        return PromptError(f"prompt {text!r}: {reason}; prompts read like 'a red circle and a small blue square "
                           "on a white background' or 'an empty gray background'")

    background = None
    if len(words) >= 2 and words[-1] == "background":
        background = words[-2]
        if background not in BACKGROUND_COLORS:
            raise fail(f"{background!r} is not a background colour")
        words = words[:-2]
        if words in (["a"], ["an"], ["a", "empty"], ["an", "empty"]):
            return background, ()
        if not words or words[-1] not in ("a", "an"):
            raise fail("the background needs its article")
        words = words[:-1]
        if not words or words[-1] != "on":
            raise fail("objects and the background are joined by 'on'")
        words = words[:-1]
    if not words:
        raise fail("it names nothing")
    objects = []
    phrase: list[str] = []
    for word in [*words, "and"]:
        if word != "and":
            phrase.append(word)
            continue
        if not (3 <= len(phrase) <= 4 and phrase[0] in ("a", "an")):
            raise fail(f"{' '.join(phrase)!r} is not an object ('a [size] <colour> <shape>')")
        *size, color, shape = phrase[1:]
        if color not in OBJECT_COLORS or shape not in SHAPES or (size and size[0] not in SIZES):
            raise fail(f"{' '.join(phrase)!r} is not an object ('a [size] <colour> <shape>')")
        objects.append(PromptObject(color, shape, size[0] if size else None))
        phrase = []
    return background, tuple(objects)
