"""Fixtures for the overhead benchmarks: an SDXL-shaped fake model and the default stages.

The fake adapter has SDXL's sizes (native 1024 px, VAE factor 8, 4 latent
channels, text embeddings ``(P, 77, 2048)`` and pooled ``(P, 1280)``) and
SDXL's Euler scheduler, but its "UNet" is ``latents * 0.1``, its text
encoders return constants and its "VAE" returns a blank image. Whatever time
a sampler run takes with it is therefore the sampler's own work apart from
the model: the overhead of method section 6.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

import attrs
import pytest
import torch
from accdiffusion import AttentionMaps, Conditioning, DecomposeRequest, ModelAdapter, PatchPrompts, Sampler
from accdiffusion_dilated import WindowInteractionGuidance
from accdiffusion_prompts import CrossAttentionDecomposer
from accdiffusion_tiling import SlidingWindowTiler
from accdiffusion_upscalers import BicubicLatentUpscaler
from diffusers import EulerDiscreteScheduler

torch.set_num_threads(1)

#: SDXL-base-1.0's scheduler configuration.
SDXL_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

#: A 20-word prompt; the crafted attention maps have one channel per word (the fake tokenizes by words).
PROMPT = "a red fox sitting in the snow forest under the moon with golden light and tall trees near a lake"
PROMPT_WORDS = tuple(PROMPT.split())


class FakeSDXLAdapter(ModelAdapter):
    """A :class:`ModelAdapter` with SDXL's shapes whose model calls cost next to nothing.

    ``predict`` returns ``latents * 0.1``; text encoding returns constant
    embeddings of SDXL's sizes; decoding returns a blank image, of the decoded
    size ``(N, 3, 8h, 8w)`` with ``full_size_decode`` and 8x8 otherwise (so
    that the final PIL conversion, benchmarked on its own, stays out of the
    step benchmarks). ``pipeline`` is a namespace holding a real SDXL
    :class:`EulerDiscreteScheduler`, the only part of it the sampler reads.
    ``predict_views`` counts the views given to ``predict`` (CFG halves included).
    """

    family = "sdxl"
    text_length = 77
    embed_dim = 2048
    pooled_dim = 1280

    def __init__(self, *, full_size_decode: bool = True) -> None:
        self.full_size_decode = full_size_decode
        self.pipeline = SimpleNamespace(scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG))
        self.denoiser = None
        self.vae = None
        self.tokenizer = SimpleNamespace(model_max_length=self.text_length)
        self.vae_scale_factor = 8
        self.latent_channels = 4
        self.native_size = 1024
        self.device = torch.device("cpu")
        self.predict_views = 0

    @property
    def dtype(self) -> torch.dtype:
        """Latents and embeddings are float32."""
        return torch.float32

    def word_tokens(self, prompt: str) -> tuple[str, ...]:
        """One token per whitespace-separated word."""
        return tuple(prompt.split())

    def prompt_token_count(self, prompt: str) -> int:
        """Words plus BOS and EOS."""
        return len(prompt.split()) + 2

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Constant SDXL-sized rows: embeds ``(P, 77, 2048)``, pooled ``(P, 1280)``."""
        n = len(prompts)
        return Conditioning(torch.full((n, self.text_length, self.embed_dim), 0.01),
                            torch.full((n, self.pooled_dim), 0.01))

    def encode_negative(self, prompt: str, negative_prompt: str) -> Conditioning:
        """One constant row, as :meth:`encode_prompts`."""
        return self.encode_prompts([negative_prompt])

    def predict(self, latents: torch.Tensor, timestep: Any, cond: Conditioning,
                positions: Optional[torch.Tensor], target_size: tuple[int, int]) -> torch.Tensor:
        """``latents * 0.1``: the right shape at almost no cost."""
        self.predict_views += latents.shape[0]
        return latents * 0.1

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """A blank image: ``(N, 3, 8h, 8w)`` with :attr:`full_size_decode`, else ``(N, 3, 8, 8)``."""
        h, w = latents.shape[-2:] if self.full_size_decode else (1, 1)
        return torch.zeros((latents.shape[0], 3, h * self.vae_scale_factor, w * self.vae_scale_factor))


def blob_attention_maps(n_words: int, side: int = 32, seed: int = 0) -> AttentionMaps:
    """Crafted phase-1 cross-attention maps ``(side, side, n_words)``: one Gaussian
    blob per word at a random centre, so words land in different windows as real maps do."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand((n_words, 2), generator=gen) * side
    widths = 2.0 + torch.rand(n_words, generator=gen) * side / 4
    ys = torch.arange(side, dtype=torch.float32).reshape(side, 1, 1)
    xs = torch.arange(side, dtype=torch.float32).reshape(1, side, 1)
    d2 = (ys - centres[:, 0]) ** 2 + (xs - centres[:, 1]) ** 2
    maps = torch.exp(-d2 / (2 * widths**2))
    return AttentionMaps(maps=maps / maps.sum(dim=-1, keepdim=True), words=PROMPT_WORDS[:n_words],
                         latent_per_map=4)


@attrs.frozen
class PrecomputedAttentionDecomposer(CrossAttentionDecomposer):
    """The default ``cross_attention`` decomposer fed crafted maps instead of captured ones.

    The sampler captures maps only from a real UNet; this subclass does not
    ask for capture (``needs_attention = False``) but keeps the default's
    fixed per-phase windows and runs the default decomposition on ``maps``.
    """

    needs_attention = False
    fixed_windows = True

    maps: AttentionMaps = attrs.field(kw_only=True, eq=False, repr=False)

    def decompose(self, request: DecomposeRequest) -> PatchPrompts:
        """:meth:`CrossAttentionDecomposer.decompose` with :attr:`maps` as the attention."""
        return super().decompose(attrs.evolve(request, attention=self.maps))


class StepClock:
    """A sampler ``progress`` factory that timestamps every step of every phase.

    ``steps[description]`` lists the seconds of each step (from the bar's
    creation or the previous step to the step's ``update``).
    """

    def __init__(self) -> None:
        self.steps: dict[str, list[float]] = {}

    def __call__(self, description: str, total: int) -> "StepClock._Bar":
        """Open the bar of phase ``description``."""
        durations: list[float] = []
        self.steps[description] = durations
        return StepClock._Bar(durations)

    class _Bar:
        """One phase's bar: appends the seconds since the previous update at every update."""

        def __init__(self, durations: list[float]) -> None:
            self.durations = durations
            self.last = time.perf_counter()

        def update(self, n: int = 1) -> None:
            """A step ended."""
            now = time.perf_counter()
            self.durations.append(now - self.last)
            self.last = now

        def close(self) -> None:
            """The phase ended; nothing to record."""


@pytest.fixture
def prompt() -> str:
    """The 20-word prompt of the crafted attention maps."""
    return PROMPT


@pytest.fixture
def attention_maps() -> AttentionMaps:
    """Crafted 32x32x20 maps, the size SDXL's phase 1 records at 1024 px."""
    return blob_attention_maps(len(PROMPT_WORDS))


@pytest.fixture
def make_sampler(attention_maps: AttentionMaps) -> Callable[[], tuple[Sampler, FakeSDXLAdapter]]:
    """Factory of a :class:`Sampler` with the default stages (cross_attention on
    crafted maps, sliding_window with jitter, window_interaction, bicubic_latent)
    on a fresh :class:`FakeSDXLAdapter` whose decode is 8x8; returns both."""

    def make() -> tuple[Sampler, FakeSDXLAdapter]:
        adapter = FakeSDXLAdapter(full_size_decode=False)
        sampler = Sampler(
            adapter,
            prompt_decomposer=PrecomputedAttentionDecomposer(maps=attention_maps),
            tiler=SlidingWindowTiler(jitter=True),
            global_guidance=WindowInteractionGuidance(),
            upscaler=BicubicLatentUpscaler(),
        )
        return sampler, adapter

    return make


@pytest.fixture
def full_size_adapter() -> FakeSDXLAdapter:
    """A :class:`FakeSDXLAdapter` whose decode has the true image size."""
    return FakeSDXLAdapter(full_size_decode=True)


@pytest.fixture
def step_clock() -> Callable[[], StepClock]:
    """Factory of :class:`StepClock` progress recorders."""
    return StepClock


def expected_views(scale: int) -> int:
    """UNet views per upscaling step of phase ``scale`` (method section 6), before CFG doubling."""
    return (2 * scale - 1) ** 2 + scale**2


@pytest.fixture
def views_per_step() -> Callable[[int], int]:
    """:func:`expected_views`."""
    return expected_views


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


@pytest.fixture
def median_of() -> Callable[[Sequence[float]], float]:
    """:func:`median`."""
    return median
