"""Tiny random-weight Stable Diffusion pipelines, built and saved fully offline.

The pipelines mirror the real model families closely enough for the loading,
encoding and denoising code paths to be exercised unchanged, while a UNet
forward on a small batch takes milliseconds on a CPU:

* latent ``sample_size`` 16 and a two-level VAE (``vae_scale_factor`` 2), so the
  native image size is 32 px;
* cross-attention blocks in the down and up paths at 1/4 of the latent side,
  i.e. 4x4 = 16 image tokens at the native size;
* CLIP text encoders with hidden size 32 and a vocabulary from
  :func:`accdiffusion_testing.tokenizer.write_clip_tokenizer`.

Every weighted component is created right after ``torch.manual_seed(seed)``, so
the same seed always yields identical weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from accdiffusion_testing.tokenizer import MODEL_MAX_LENGTH, write_clip_tokenizer

__all__ = [
    "LATENT_SIZE",
    "NATIVE_SIZE",
    "TEXT_HIDDEN_SIZE",
    "VAE_SCALE_FACTOR",
    "make_small_sdxl",
    "make_tiny_sd15",
    "make_tiny_sd21",
    "make_tiny_sdxl",
]

LATENT_SIZE = 16
VAE_SCALE_FACTOR = 2
NATIVE_SIZE = LATENT_SIZE * VAE_SCALE_FACTOR
TEXT_HIDDEN_SIZE = 32

_NORM_GROUPS = 4
_VAE_CHANNELS = (8, 16)
_VAE_DECODER_OUT_SCALE = 0.5
_SDXL_TIME_EMBED_DIM = 8
_SDXL_SCALING_FACTOR = 0.13025
_SD_SCALING_FACTOR = 0.18215

_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}


def _tokenizer(folder: Path) -> CLIPTokenizer:
    """Write the tiny CLIP tokenizer into ``folder`` and load it back."""
    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder))


def _text_config(tokenizer: CLIPTokenizer, *, projection_dim: int, hidden_act: str,
                 hidden_size: int = TEXT_HIDDEN_SIZE, intermediate_size: int = 37) -> CLIPTextConfig:
    """Return a two-layer CLIP text config whose vocabulary and special ids match ``tokenizer``."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        projection_dim=projection_dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        hidden_act=hidden_act,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _vae(seed: int, scaling_factor: float, channels: tuple[int, ...] = _VAE_CHANNELS,
         sample_size: int = NATIVE_SIZE) -> AutoencoderKL:
    """Build a VAE with ``len(channels)`` levels (``vae_scale_factor`` ``2 ** (levels - 1)``)
    whose decoded images are not saturated."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=_NORM_GROUPS,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
    )
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(_VAE_DECODER_OUT_SCALE)
        vae.decoder.conv_out.bias.zero_()
    return vae


def make_tiny_sdxl(folder: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Build a tiny SDXL pipeline and save it to ``folder`` as safetensors.

    The UNet follows SDXL's layout (``DownBlock2D`` then two ``CrossAttnDownBlock2D``;
    mirrored up path; ``text_time`` added conditioning; linear projections) with
    block channels (8, 16, 32). The two text encoders (``CLIPTextModel`` and
    ``CLIPTextModelWithProjection``) have hidden size 32, so the UNet's
    cross-attention dimension is their concatenation, 64.

    Args:
        folder: Target directory, created if missing.
        seed: Seed applied with ``torch.manual_seed`` before each component.
        dtype: Dtype of the saved weights.

    Returns:
        The folder as a :class:`~pathlib.Path`, loadable with
        ``DiffusionPipeline.from_pretrained(folder)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(folder / "tokenizer")
    tokenizer_2 = _tokenizer(folder / "tokenizer_2")

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer, projection_dim=TEXT_HIDDEN_SIZE, hidden_act="quick_gelu"))
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(
        _text_config(tokenizer_2, projection_dim=TEXT_HIDDEN_SIZE, hidden_act="gelu")
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16, 32),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),
        norm_num_groups=_NORM_GROUPS,
        cross_attention_dim=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=_SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=_SDXL_TIME_EMBED_DIM * 6 + text_encoder_2.config.projection_dim,
    )

    vae = _vae(seed, _SDXL_SCALING_FACTOR)
    scheduler = EulerDiscreteScheduler(**_SCHEDULER_CONFIG, prediction_type="epsilon")

    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def make_small_sdxl(folder: str | Path, *, seed: int = 0) -> Path:
    """Build a small SDXL pipeline for CPU speed measurements and save it to ``folder``.

    SDXL's layout at a small width: native 512 px (latent 64, a four-level VAE
    with ``vae_scale_factor`` 8), UNet block channels (64, 128, 256) with two
    layers per block and one transformer layer per attention block (24.4M
    parameters; cross-attention at 1/2 and 1/4 of the latent side as in SDXL),
    two CLIP text encoders of hidden size 64 on the offline tokenizer, SDXL's
    Euler scheduler. Random weights: it measures time, not images.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(folder / "tokenizer")
    tokenizer_2 = _tokenizer(folder / "tokenizer_2")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer, projection_dim=64, hidden_act="quick_gelu",
                                              hidden_size=64, intermediate_size=256))
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, projection_dim=64, hidden_act="gelu",
                                                              hidden_size=64, intermediate_size=256))
    torch.manual_seed(seed)
    channels = (64, 128, 256)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=channels,
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 1),
        attention_head_dim=tuple(c // 32 for c in channels),
        norm_num_groups=32,
        cross_attention_dim=128,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=32 * 6 + 64,
    )
    vae = _vae(seed, _SDXL_SCALING_FACTOR, channels=(8, 16, 32, 32), sample_size=512)
    scheduler = EulerDiscreteScheduler(**_SCHEDULER_CONFIG, prediction_type="epsilon")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def make_tiny_sd15(folder: str | Path, *, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Build a tiny Stable Diffusion 1.5-style pipeline and save it to ``folder`` as safetensors.

    The UNet follows SD 1.5's layout (three ``CrossAttnDownBlock2D`` then a
    ``DownBlock2D``; mirrored up path) with block channels (8, 16, 32, 32) and a
    cross-attention dimension of 32, the hidden size of the single text encoder.
    The pipeline has no safety checker and no feature extractor.

    Args:
        folder: Target directory, created if missing.
        seed: Seed applied with ``torch.manual_seed`` before each component.
        prediction_type: Scheduler prediction type, ``"epsilon"`` or ``"v_prediction"``.

    Returns:
        The folder as a :class:`~pathlib.Path`, loadable with
        ``DiffusionPipeline.from_pretrained(folder)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(folder / "tokenizer")

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(tokenizer, projection_dim=TEXT_HIDDEN_SIZE, hidden_act="quick_gelu"))

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        attention_head_dim=2,
        norm_num_groups=_NORM_GROUPS,
        cross_attention_dim=text_encoder.config.hidden_size,
    )

    vae = _vae(seed, _SD_SCALING_FACTOR)
    scheduler = EulerDiscreteScheduler(**_SCHEDULER_CONFIG, prediction_type=prediction_type)

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def make_tiny_sd21(folder: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny Stable Diffusion 2.1-style (``v_prediction``) pipeline; see :func:`make_tiny_sd15`."""
    return make_tiny_sd15(folder, seed=seed, prediction_type="v_prediction")
