"""Tiny random-weight diffusers pipelines, built fully offline, for tests and plugin authors."""

from accdiffusion_testing.models import (
    LATENT_SIZE,
    NATIVE_SIZE,
    VAE_SCALE_FACTOR,
    make_tiny_sd15,
    make_tiny_sd21,
    make_tiny_sdxl,
)
from accdiffusion_testing.tokenizer import DEFAULT_WORDS, write_clip_tokenizer

__all__ = [
    "DEFAULT_WORDS",
    "LATENT_SIZE",
    "NATIVE_SIZE",
    "VAE_SCALE_FACTOR",
    "make_tiny_sd15",
    "make_tiny_sd21",
    "make_tiny_sdxl",
    "write_clip_tokenizer",
]
