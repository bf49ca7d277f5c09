"""Tests for the tiny offline tokenizer, pipelines and pytest fixtures."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from accdiffusion_testing import (
    DEFAULT_WORDS,
    LATENT_SIZE,
    NATIVE_SIZE,
    VAE_SCALE_FACTOR,
    make_tiny_sd15,
    make_tiny_sd21,
    make_tiny_sdxl,
    write_clip_tokenizer,
)
from accdiffusion_testing.tokenizer import BOS_TOKEN, END_OF_WORD, EOS_TOKEN, build_clip_vocab_and_merges


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CLIPTokenizer:
    """The default tiny tokenizer, loaded the way pipelines load it."""
    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path_factory.mktemp("tokenizer")))


def _word_id(tokenizer: CLIPTokenizer, word: str) -> int:
    """Id of the whole-word token for ``word``."""
    return tokenizer.convert_tokens_to_ids(word + END_OF_WORD)


def test_tokenizer_files_and_special_tokens(tokenizer: CLIPTokenizer, tmp_path: Path) -> None:
    folder = write_clip_tokenizer(tmp_path)
    assert {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"} <= {
        path.name for path in folder.iterdir()
    }
    assert tokenizer.model_max_length == 77
    assert tokenizer.bos_token == BOS_TOKEN
    assert tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.pad_token == EOS_TOKEN
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.decode([_word_id(tokenizer, "castle")]) == "castle"
    padded = tokenizer("a cat", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(padded) == 77
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert padded[:4] == [bos, _word_id(tokenizer, "a"), _word_id(tokenizer, "cat"), eos]
    assert padded[4:] == [eos] * 73


def test_vocab_and_merges_are_consistent() -> None:
    vocab, merges = build_clip_vocab_and_merges()
    assert len(set(merges)) == len(merges)
    assert sorted(vocab.values()) == list(range(len(vocab)))
    for left, right in merges:
        assert left in vocab and right in vocab and left + right in vocab
    # 256 byte symbols, the same with the end-of-word suffix, then merged tokens and the specials.
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert all(len(token) == 1 for token in tokens[:256])
    assert tokens[256:512] == [token + END_OF_WORD for token in tokens[:256]]
    assert tokens[-2:] == [BOS_TOKEN, EOS_TOKEN]
    assert {word + END_OF_WORD for word in DEFAULT_WORDS} <= set(vocab)


def test_each_listed_word_is_one_token(tokenizer: CLIPTokenizer) -> None:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for word in DEFAULT_WORDS:
        ids = tokenizer(word).input_ids
        assert ids == [bos, _word_id(tokenizer, word), eos], word
        assert tokenizer.decode(ids[1:2]) == word
    assert tokenizer("a red circle").input_ids == [
        bos,
        _word_id(tokenizer, "a"),
        _word_id(tokenizer, "red"),
        _word_id(tokenizer, "circle"),
        eos,
    ]
    assert tokenizer("A RED Circle").input_ids == tokenizer("a red circle").input_ids


def test_unknown_word_falls_back_to_characters(tokenizer: CLIPTokenizer) -> None:
    ids = tokenizer("qzxj").input_ids
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["q", "z", "x", "j" + END_OF_WORD]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "qzxj"


def test_custom_words_with_shared_prefixes(tmp_path: Path) -> None:
    words = ["Zebra", "zebras", "zeb", "bra", "ebra"]
    custom = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path, words=words))
    for word in words:
        ids = custom(word).input_ids
        assert len(ids) == 3, word
        assert custom.decode(ids[1:2]) == word.lower()
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert len(set(merges)) == len(merges)
    assert json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8")) == custom.get_vocab()


def test_non_letter_words_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ASCII letters"):
        write_clip_tokenizer(tmp_path, words=["hello world"])


_SDXL_COMPONENTS = {
    "vae": AutoencoderKL,
    "text_encoder": CLIPTextModel,
    "text_encoder_2": CLIPTextModelWithProjection,
    "tokenizer": CLIPTokenizer,
    "tokenizer_2": CLIPTokenizer,
    "unet": UNet2DConditionModel,
    "scheduler": EulerDiscreteScheduler,
}
_SD_COMPONENTS = {
    "vae": AutoencoderKL,
    "text_encoder": CLIPTextModel,
    "tokenizer": CLIPTokenizer,
    "unet": UNet2DConditionModel,
    "scheduler": EulerDiscreteScheduler,
}
_FAMILIES = {
    "sdxl": ("tiny_sdxl_path", StableDiffusionXLPipeline, _SDXL_COMPONENTS, "epsilon"),
    "sd15": ("tiny_sd15_path", StableDiffusionPipeline, _SD_COMPONENTS, "epsilon"),
    "sd21": ("tiny_sd21_path", StableDiffusionPipeline, _SD_COMPONENTS, "v_prediction"),
}


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_pipeline_loads_and_generates(family: str, request: pytest.FixtureRequest) -> None:
    path_fixture, pipeline_class, components, prediction_type = _FAMILIES[family]
    pipe = DiffusionPipeline.from_pretrained(request.getfixturevalue(path_fixture))

    assert type(pipe) is pipeline_class
    for name, component_class in components.items():
        assert isinstance(getattr(pipe, name), component_class), name
    assert pipe.vae_scale_factor == VAE_SCALE_FACTOR
    assert pipe.unet.config.sample_size == LATENT_SIZE
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    scheduler = pipe.scheduler.config
    assert scheduler.prediction_type == prediction_type
    assert (scheduler.beta_start, scheduler.beta_end, scheduler.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert (scheduler.steps_offset, scheduler.timestep_spacing) == (1, "leading")
    if pipeline_class is StableDiffusionXLPipeline:
        assert pipe.config.force_zeros_for_empty_prompt is True
        assert pipe.watermark is None
        assert not getattr(pipe.config, "requires_aesthetics_score", False)
        assert pipe.unet.config.cross_attention_dim == 64
    else:
        assert pipe.safety_checker is None and pipe.feature_extractor is None
        assert pipe.unet.config.cross_attention_dim == 32

    image = pipe(
        "a red circle on a white background",
        num_inference_steps=2,
        height=NATIVE_SIZE,
        width=NATIVE_SIZE,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, NATIVE_SIZE, NATIVE_SIZE, 3)
    assert np.isfinite(image).all()
    assert image.std() > 0.01, "decoded image is flat"
    assert ((image > 0.0) & (image < 1.0)).mean() > 0.9, "decoded image is saturated"


def _record_attn2_tokens(pipe: DiffusionPipeline, run: Callable[[], object]) -> dict[str, list[int]]:
    """Run ``run`` and return, per path ("down", "mid", "up"), the image token counts seen by ``attn2`` modules."""
    seen: dict[str, list[int]] = {"down": [], "mid": [], "up": []}
    handles = []
    for name, module in pipe.unet.named_modules():
        if not name.endswith(".attn2"):
            continue
        path = name.split("_", 1)[0]

        def hook(_module: torch.nn.Module, args: tuple, kwargs: dict, path: str = path) -> None:
            hidden_states = args[0] if args else kwargs["hidden_states"]
            seen[path].append(hidden_states.shape[1])

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize(
    ("pipeline_fixture", "down_tokens", "up_tokens"),
    [
        ("tiny_sdxl_pipeline", {64, 16}, {16, 64}),
        ("tiny_sd15_pipeline", {256, 64, 16}, {16, 64, 256}),
    ],
)
def test_unet_cross_attention_token_counts(
    pipeline_fixture: str, down_tokens: set[int], up_tokens: set[int], request: pytest.FixtureRequest
) -> None:
    pipe = request.getfixturevalue(pipeline_fixture)

    def run() -> object:
        return pipe(
            "a cat", num_inference_steps=1, height=NATIVE_SIZE, width=NATIVE_SIZE, output_type="latent"
        )

    seen = _record_attn2_tokens(pipe, run)
    assert set(seen["down"]) == down_tokens
    assert set(seen["up"]) == up_tokens


def _state_dicts(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """All safetensors files under ``folder``, keyed by relative path."""
    return {
        str(path.relative_to(folder)): load_file(path) for path in sorted(folder.rglob("*.safetensors"))
    }


@pytest.mark.parametrize("make", [make_tiny_sdxl, make_tiny_sd15, make_tiny_sd21], ids=lambda make: make.__name__)
def test_same_seed_gives_identical_weights(make: Callable[..., Path], tmp_path: Path) -> None:
    first = _state_dicts(make(tmp_path / "first", seed=3))
    second = _state_dicts(make(tmp_path / "second", seed=3))
    other = _state_dicts(make(tmp_path / "other", seed=4))

    assert first.keys() == second.keys()
    assert len(first) == len(second) >= 3
    for file_name, tensors in first.items():
        assert tensors.keys() == second[file_name].keys()
        for key, tensor in tensors.items():
            assert torch.equal(tensor, second[file_name][key]), f"{file_name}:{key}"
    assert not torch.equal(
        first["unet/diffusion_pytorch_model.safetensors"]["conv_in.weight"],
        other["unet/diffusion_pytorch_model.safetensors"]["conv_in.weight"],
    )


def test_sdxl_dtype_is_saved(tmp_path: Path) -> None:
    folder = make_tiny_sdxl(tmp_path, dtype=torch.float16)
    for tensors in _state_dicts(folder).values():
        assert {tensor.dtype for tensor in tensors.values()} == {torch.float16}
