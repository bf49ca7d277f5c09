"""What the rectified-flow transformer families share (FLUX.1, SD3).

:class:`FlowTransformerAdapter`: a transformer denoiser in 2x2 patches, its
native size from the transformer config's ``sample_size``, a flow-matching
noise schedule only, no ControlNet; :class:`JointAttentionCapture`: phase-1
maps from the joint-attention blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..attention import AttentionRecorder
from ..configs import positive_int, read_config, vae_scale_factor
from ..errors import ModelError
from .base import ModelAdapter
from .noise import FlowMatchNoise, schedule_for

#: The latent side FLUX.1 and SD3 are trained at (1024 px at a VAE factor of 8).
DEFAULT_SAMPLE_SIZE = 128


class JointAttentionCapture:
    """Records phase 1's image-to-text attention in every joint-attention block
    (``transformer.transformer_blocks``) and restores the processors on exit;
    a family sets :attr:`processor`, the recording wrapper of its blocks.

    Maps have one pixel per 2x2 patch, ``(h/2, w/2)`` for an ``h x w`` latent
    (:meth:`grid`), each covering 2 latent pixels; ``first_token``: the text
    position of the prompt's first token."""

    latent_per_map = 2
    #: wraps one block's processor: ``processor(original, recorder)`` (set by each family)
    processor: Any = None

    def __init__(self, transformer: Any, first_token: int = 0) -> None:
        self.transformer = transformer
        self.recorder = AttentionRecorder(first_token=first_token)
        self.blocks = list(getattr(transformer, "transformer_blocks", ()))
        if not self.blocks:
            raise ModelError(f"the {type(transformer).__name__} has no joint-attention blocks to read maps from")
        self._saved: list[Any] = []

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // 2, width // 2

    def __enter__(self) -> "JointAttentionCapture":
        self._saved = [block.attn.processor for block in self.blocks]
        for block, original in zip(self.blocks, self._saved):
            block.attn.processor = self.processor(original, self.recorder)
        return self

    def __exit__(self, *exc: Any) -> None:
        for block, original in zip(self.blocks, self._saved):
            block.attn.processor = original
        self._saved = []


class FlowTransformerAdapter(ModelAdapter):
    """A rectified-flow transformer: ``latent_channels = in_channels / packed``
    (FLUX packs 2x2 patches into its input channels: ``packed = 4``)."""

    patch_size = 2
    packed = 1
    label = "this model"

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)
        self.transformer = pipeline.transformer
        self.denoiser = self.transformer
        config = self.transformer.config
        self.latent_channels = int(config.in_channels) // self.packed
        sample = getattr(config, "sample_size", None)
        self.native_size = int(sample if positive_int(sample) else DEFAULT_SAMPLE_SIZE) * self.vae_scale_factor

    @classmethod
    def folder_info(cls, folder: Path, location: str) -> dict[str, Any]:
        transformer = read_config(folder, "transformer/config.json", location)
        channels = transformer.get("in_channels")
        if not (positive_int(channels) and channels % cls.packed == 0):
            raise ModelError(f"model folder {location!r}: transformer/config.json key 'in_channels' is "
                             f"{'missing' if 'in_channels' not in transformer else repr(channels)}; "
                             f"expected a positive multiple of {cls.packed}")
        vae_factor = vae_scale_factor(folder, location)
        sample = transformer.get("sample_size")
        sample = sample if positive_int(sample) else DEFAULT_SAMPLE_SIZE
        return {"native_size": sample * vae_factor, "vae_scale_factor": vae_factor,
                "latent_channels": channels // cls.packed, "denoiser": "transformer", "patch_size": cls.patch_size}

    def noise_schedule(self, scheduler: Any) -> FlowMatchNoise:
        noise = schedule_for(scheduler)
        if not isinstance(noise, FlowMatchNoise):
            raise ModelError(f"{self.label} is a flow-matching model: the scheduler {type(scheduler).__name__} "
                             "does not fit it; allowed: --scheduler default (its FlowMatchEulerDiscreteScheduler)")
        return noise

    def _refuse_residuals(self, extra: dict[str, Any]) -> None:
        if any(v is not None for v in extra.values()):
            raise ModelError(f"{self.label} takes no ControlNet residuals; allowed: --structure-guidance none")
