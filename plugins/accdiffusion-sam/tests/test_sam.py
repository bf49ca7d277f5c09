"""Tests of the ``sam`` decomposer: hand-worked masks from a fake segmenter, a tiny
random SAM loaded offline through ``from_pretrained``, and the decomposer contract."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import accdiffusion
import pytest
import torch
from accdiffusion import AttentionMaps, DecomposeRequest, ModelError, PatchPrompts, SettingsError, Window, WindowLayout
from accdiffusion_prompts import CrossAttentionDecomposer, word_masks
from accdiffusion_testing.kit import PromptDecomposerContract, host_with, sample_image
from accdiffusion_sam import (
    DEFAULT_MODEL,
    Point,
    SamDecomposer,
    SamSegmenter,
    peak_points,
    pool_masks,
    word_peaks,
)
from accdiffusion_sam.decomposer import SamOptions
from accdiffusion_sam.plugin import plugin
from PIL import Image, ImageDraw
from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

SAM_SIZE = 64  # the tiny SAM's input side: 4x4 patches of 16 px


def make_tiny_sam(folder: Path, side: int = SAM_SIZE) -> Path:
    """A random SamModel with small encoder and decoder, and its processor, saved to ``folder``."""
    config = SamConfig(
        vision_config={"hidden_size": 32, "output_channels": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": side, "patch_size": 16, "window_size": 2, "global_attn_indexes": [1],
                       "num_pos_feats": 8, "mlp_dim": 64},
        prompt_encoder_config={"hidden_size": 16, "image_size": side, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": 16, "mlp_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "iou_head_hidden_dim": 16},
    )
    torch.manual_seed(0)
    SamModel(config).save_pretrained(folder)
    image_processor = SamImageProcessor(
        size={"longest_edge": side}, pad_size={"height": side, "width": side},
        mask_size={"longest_edge": side // 4}, mask_pad_size={"height": side // 4, "width": side // 4},
    )
    SamProcessor(image_processor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_sam_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


@pytest.fixture
def embedding_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts SamModel.get_image_embeddings calls (one entry per call)."""
    calls: list[int] = []
    original = SamModel.get_image_embeddings

    def counting(self: SamModel, pixel_values: torch.Tensor, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return original(self, pixel_values, **kwargs)

    monkeypatch.setattr(SamModel, "get_image_embeddings", counting)
    return calls


def grid_layout() -> WindowLayout:
    """3x3 windows of 32 latent px, stride 16, on the 64x64 canvas of phase 2 (scale 2)."""
    starts = (0, 16, 32)
    return WindowLayout(tuple(Window(t, l, 32, 32) for t in starts for l in starts), 64, 64)


def peaked_maps(*cells: tuple[int, int] | None, size: int = 8) -> torch.Tensor:
    """``(size, size, n)`` maps, word ``j`` at 1.0 on ``cells[j]`` only, flat (all 0.5) for ``None``."""
    maps = torch.zeros(size, size, len(cells))
    for j, cell in enumerate(cells):
        if cell is None:
            maps[..., j] = 0.5
        else:
            maps[cell[0], cell[1], j] = 1.0
    return maps


class FakeSegmenter:
    """Returns fixed pixel masks for the words it is asked about, and records the points."""

    def __init__(self, masks: Sequence[torch.Tensor]) -> None:
        self.masks = list(masks)
        self.calls: list[list[list[Point]]] = []

    def __call__(self, image: Image.Image, points: Sequence[Sequence[Point]]) -> torch.Tensor:
        self.calls.append([list(group) for group in points])
        return torch.stack(self.masks[: len(points)])


def halves(side: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel masks of a ``side`` px image: left half, right half, bottom half."""
    left, right, bottom = (torch.zeros(side, side, dtype=torch.bool) for _ in range(3))
    left[:, : side // 2] = True
    right[:, side // 2:] = True
    bottom[side // 2:, :] = True
    return left, right, bottom


def request(maps: torch.Tensor, words: tuple[str, ...], image: Image.Image | None, scale: int = 2,
            layout: WindowLayout | None = None) -> DecomposeRequest:
    return DecomposeRequest(" ".join(words), layout or grid_layout(), scale, AttentionMaps(maps, words, 4),
                            low_res_image=None if image is None else (lambda: image))


def is_in_order(kept: Sequence[str], words: Sequence[str]) -> bool:
    """``kept`` is a subsequence of ``words``."""
    rest = iter(words)
    return all(any(w == v for v in rest) for w in kept)


class SquareSegmenter:
    """A segmenter for any words: each word's mask is the square of a quarter of
    the image's side around its first point; records the calls."""

    def __init__(self) -> None:
        self.calls: list[list[list[Point]]] = []

    def __call__(self, image: Image.Image, points: Sequence[Sequence[Point]]) -> torch.Tensor:
        self.calls.append([list(group) for group in points])
        masks = torch.zeros(len(points), image.height, image.width, dtype=torch.bool)
        side = max(1, min(image.size) // 4)
        for k, group in enumerate(points):
            x, y = (int(v) for v in group[0])
            masks[k, max(0, y - side // 2): y + side // 2 + 1, max(0, x - side // 2): x + side // 2 + 1] = True
        return masks


# -- registration, options and the contract ----------------------------------------


class TestSamContract(PromptDecomposerContract):
    """The decomposer the host builds: no image in the requests, so SAM is never loaded."""

    plugin = plugin
    name = "sam"
    entry_point = "sam"


class TestSamWithSegmenterContract(PromptDecomposerContract):
    """The decomposer with a segmenter and a phase-1 image: SAM masks in the requests."""

    plugin = plugin
    name = "sam"
    entry_point = "sam"

    def make(self) -> SamDecomposer:
        return SamDecomposer(SquareSegmenter(), threshold=0.2, points_per_word=2)

    def low_res_image(self) -> Image.Image:
        return sample_image(64, 64)


def test_registered_and_built_from_settings_without_loading(tmp_path: Path) -> None:
    host = host_with(plugin)
    assert host.registry.names("prompt_decomposer") == ["sam"]
    missing = tmp_path / "no-sam-here"
    settings = accdiffusion.Settings(prompt="x", device="cpu",
                                     plugin_options={"c": 0.4, "sam_model": str(missing), "sam_points": "3"})
    decomposer = host.create("prompt_decomposer", "sam", settings)  # nothing is loaded yet
    assert isinstance(decomposer, SamDecomposer) and isinstance(decomposer, accdiffusion.PromptDecomposer)
    assert decomposer.threshold == 0.4 and decomposer.points_per_word == 3
    assert decomposer.options == SamOptions(model=str(missing), threshold=0.4, points_per_word=3, device="cpu")
    assert decomposer.needs_attention and decomposer.fixed_windows
    assert isinstance(decomposer.segmenter, SamSegmenter)
    assert decomposer.segmenter.model_id == str(missing) and decomposer.segmenter.device == "cpu"
    default = SamDecomposer.for_run(accdiffusion.Settings(prompt="x", device="cpu"), SamOptions())
    assert default.segmenter.model_id == DEFAULT_MODEL and default.points_per_word == 1
    with pytest.raises(ModelError, match="no-sam-here.*local folder or from the Hugging Face hub"):
        decomposer.decompose(request(peaked_maps((1, 1)), ("cat",), Image.new("RGB", (64, 64))))


def test_device_option_overrides_the_run_device() -> None:
    settings = accdiffusion.Settings(prompt="x", device="cpu", plugin_options={"sam.device": "meta"})
    decomposer = host_with(plugin).create("prompt_decomposer", "sam", settings)
    assert decomposer.segmenter.device == "meta" and decomposer.options.device == "meta"


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_points_option_is_refused(value: str) -> None:
    settings = accdiffusion.Settings(prompt="x", plugin_options={"sam_points": value})
    with pytest.raises(SettingsError, match=r"sam.points_per_word \(given as 'sam_points'\)"):
        host_with(plugin).create("prompt_decomposer", "sam", settings)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="threshold"):
        SamDecomposer(FakeSegmenter([]), threshold=1.5)
    with pytest.raises(ValueError, match="points_per_word"):
        SamDecomposer(FakeSegmenter([]), points_per_word=0)
    with pytest.raises(ValueError, match="processor"):
        SamDecomposer("some/sam", processor=object())
    with pytest.raises(ValueError, match="processor"):
        SamDecomposer(FakeSegmenter([]), processor=object())


# -- the steps, hand-worked -----------------------------------------------------


def test_word_peaks() -> None:
    maps = torch.zeros(4, 4, 4)
    maps[..., 0] = torch.arange(16.0).reshape(4, 4)      # increasing row-major: peaks at the end
    maps[1, 2, 1], maps[3, 0, 1] = 5.0, 5.0                # a tie: row-major order decides
    maps[..., 2] = 0.25                                    # flat
    maps[2, 3, 3] = 1.0                                    # one cell above the mean only
    assert word_peaks(maps, 1) == [[(3, 3)], [(1, 2)], [], [(2, 3)]]
    assert word_peaks(maps, 3) == [[(3, 3), (3, 2), (3, 1)], [(1, 2), (3, 0)], [], [(2, 3)]]


def test_peak_points_are_cell_centres_in_pixels() -> None:
    # a 4x8 map (rows x cols) over a 64x32 image (width x height): 8 px per cell both ways
    assert peak_points([(0, 0), (3, 7), (1, 2)], (4, 8), (64, 32)) == [(4.0, 4.0), (60.0, 28.0), (20.0, 12.0)]


def test_pool_masks_is_an_area_majority() -> None:
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True             # cell (0, 0): all 16 pixels
    masks[0, :2, 4:] = True             # cell (0, 1): 8 of 16, exactly half: not set
    masks[0, 4:7, :4] = True            # cell (1, 0): 12 of 16
    assert pool_masks(masks, (2, 2)).tolist() == [[[True, False], [True, False]]]


# -- the decomposer with a fake segmenter -----------------------------------------


def test_sam_masks_replace_attention_masks() -> None:
    # single-cell attention peaks: as attention masks they cover 1/16 of a window and keep no word
    words = ("cat", "dog", "sofa")
    maps = peaked_maps((1, 1), (2, 6), (7, 3))
    image = Image.new("RGB", (64, 64))          # 8 px per map cell
    segmenter = FakeSegmenter(halves())
    prompts = SamDecomposer(segmenter, threshold=0.3).decompose(request(maps, words, image))
    assert segmenter.calls == [[[(12.0, 12.0)], [(52.0, 20.0)], [(28.0, 60.0)]]]
    assert prompts.prompts == ("cat", "cat dog", "dog",
                               "cat sofa", "cat dog sofa", "dog sofa",
                               "cat sofa", "cat dog sofa", "dog sofa")
    assert prompts.words[4] == ("cat", "dog", "sofa") and prompts.words[0] == ("cat",)
    attention_only = CrossAttentionDecomposer(threshold=0.3).decompose(request(maps, words, image))
    assert attention_only.prompts == ("",) * 9


def test_several_points_per_word_highest_first() -> None:
    maps = peaked_maps((1, 1))
    maps[5, 2, 0] = 2.0
    segmenter = FakeSegmenter(halves()[:1])
    SamDecomposer(segmenter, points_per_word=2).decompose(request(maps, ("cat",), Image.new("RGB", (64, 64))))
    assert segmenter.calls == [[[(20.0, 44.0), (12.0, 12.0)]]]


def test_flat_maps_fall_back_to_the_attention_mask() -> None:
    words = ("cat", "dog", "sky")
    maps = peaked_maps((1, 1), (2, 6), None)
    segmenter = FakeSegmenter(halves())
    decomposer = SamDecomposer(segmenter)
    req = request(maps, words, Image.new("RGB", (64, 64)))
    prompts = decomposer.decompose(req)
    assert len(segmenter.calls[0]) == 2  # only the peaked words are segmented
    assert prompts.prompts == ("cat", "cat dog", "dog") * 3
    masks = decomposer.word_masks(req.attention)
    assert torch.equal(masks[2], word_masks(req.attention)[2])
    assert masks[0, :, :4].all() and not masks[0, :, 4:].any()


def test_all_flat_maps_need_no_segmenter() -> None:
    segmenter = FakeSegmenter([])
    req = request(peaked_maps(None, None), ("a", "b"), Image.new("RGB", (64, 64)))
    assert SamDecomposer(segmenter).decompose(req).prompts == ("",) * 9 and segmenter.calls == []


def test_without_image_or_attention() -> None:
    words = ("cat", "dog", "sofa")
    maps = torch.zeros(8, 8, 3)
    maps[:, :4, 0], maps[:, 4:, 1], maps[4:, :, 2] = 1.0, 1.0, 1.0
    segmenter = FakeSegmenter(halves())
    decomposer = SamDecomposer(segmenter)
    expected = CrossAttentionDecomposer().decompose(request(maps, words, None))
    assert decomposer.decompose(request(maps, words, None)) == expected and segmenter.calls == []
    whole = decomposer.decompose(DecomposeRequest("cat dog", grid_layout(), 2))
    assert whole.prompts == ("cat dog",) * 9


def test_masks_are_segmented_once_per_maps_and_image() -> None:
    words = ("cat", "dog", "sofa")
    maps = peaked_maps((1, 1), (2, 6), (7, 3))
    attention = AttentionMaps(maps, words, 4)
    image = Image.new("RGB", (64, 64))
    segmenter = FakeSegmenter(halves())
    decomposer = SamDecomposer(segmenter)
    for scale in (2, 3):
        side = 32 * scale
        starts = range(0, side - 32 + 1, 16)
        layout = WindowLayout(tuple(Window(t, l, 32, 32) for t in starts for l in starts), side, side)
        prompts = decomposer.decompose(DecomposeRequest("cat dog sofa", layout, scale, attention, lambda: image))
        assert len(prompts.prompts) == len(layout)
    assert len(segmenter.calls) == 1
    assert prompts.prompts[0] == "cat" and prompts.prompts[-1] == "dog sofa"


# -- a tiny random SAM, loaded through from_pretrained -------------------------------


def two_squares() -> Image.Image:
    """A 64x64 image: a red square top left, a blue square bottom right."""
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, 27, 27), fill=(255, 0, 0))
    draw.rectangle((36, 36, 59, 59), fill=(0, 0, 255))
    return image


def test_tiny_sam_segments_words(tiny_sam_path: Path, embedding_calls: list[int]) -> None:
    words = ("red", "blue", "sky")
    maps = peaked_maps((1, 1), (6, 6), None)
    image = two_squares()
    decomposer = SamDecomposer(str(tiny_sam_path), threshold=0.3, points_per_word=2, device="cpu")
    req = request(maps, words, image)
    prompts = decomposer.decompose(req)
    assert isinstance(prompts, PatchPrompts) and len(prompts.prompts) == 9 and len(prompts.words) == 9
    for text, kept in zip(prompts.prompts, prompts.words):
        assert isinstance(text, str) and text == " ".join(kept) and is_in_order(kept, words)
        assert "sky" not in kept  # flat: the attention mask, which is empty
    masks = decomposer.word_masks(req.attention)
    assert masks.dtype == torch.bool and masks.shape == (3, 8, 8)
    assert torch.equal(masks[2], word_masks(req.attention)[2])
    # same image, other maps: SAM's prompt decoder runs again, the image encoder does not
    other = request(peaked_maps((6, 1), (1, 6), (3, 3)), words, image)
    assert len(decomposer.decompose(other).prompts) == 9
    assert len(embedding_calls) == 1


def test_tiny_sam_segmenter_masks_at_image_size(tiny_sam_path: Path, embedding_calls: list[int]) -> None:
    model = SamModel.from_pretrained(tiny_sam_path)
    processor = SamProcessor.from_pretrained(tiny_sam_path)
    segmenter = SamSegmenter(model, processor, device="cpu")
    image = two_squares().resize((48, 32))
    masks = segmenter(image, [[(10.0, 8.0)], [(40.0, 24.0), (30.0, 20.0)]])
    assert masks.dtype == torch.bool and masks.shape == (2, 32, 48)
    assert segmenter(image, [[(1.0, 1.0)]]).shape == (1, 32, 48)
    assert len(embedding_calls) == 1
    segmenter(image.copy(), [[(1.0, 1.0)]])  # another image object: encoded again
    assert len(embedding_calls) == 2
    with pytest.raises(ValueError, match="at least one point"):
        segmenter(image, [[]])


def test_model_and_processor_sizes_must_agree(tiny_sam_path: Path, tmp_path: Path) -> None:
    model = SamModel.from_pretrained(make_tiny_sam(tmp_path / "sam128", side=128))
    with pytest.raises(ValueError, match="64 px.*expects 128 px"):
        SamSegmenter(model, SamProcessor.from_pretrained(tiny_sam_path), device="cpu")


def test_a_run_with_tiny_sam(tiny_sd15_pipeline, tiny_sam_path: Path, embedding_calls: list[int]) -> None:
    model = SamModel.from_pretrained(tiny_sam_path)
    processor = SamProcessor.from_pretrained(tiny_sam_path)
    decomposer = SamDecomposer(model, processor, device="cpu")
    result = accdiffusion.generate("a red circle and a blue square", pipeline=tiny_sd15_pipeline,
                                   scale=2, steps=2, seed=0, prompt_decomposer=decomposer)
    assert result.image.size == (64, 64)
    patch = result.phases[1].patch_prompts
    assert patch is not None and len(patch.prompts) == len(result.phases[1].layout) > 1
    assert all(is_in_order(kept, result.attention.words) for kept in patch.words)
    assert len(embedding_calls) == 1  # SAM segmented the phase-1 image once
