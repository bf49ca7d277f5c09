"""The UNet families: SDXL and SD 1.x / 2.x (epsilon or v prediction, CFG rows).

:class:`UNetAdapter` holds what both share: the UNet as the denoiser, its
native size from ``unet.config.sample_size``, cross-attention capture on the
UNet's processors (:mod:`accdiffusion.models.unet_attention`), ControlNets
(:mod:`accdiffusion.models.controlnet`). :class:`SDXLAdapter` adds the
pooled embeddings and micro-conditioning time ids, with a view's crop
coordinates computed from its canvas position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..configs import positive_int, read_config, vae_scale_factor
from ..errors import ModelError
from ..types import Conditioning
from .base import ModelAdapter, ModelFamily
from .controlnet import check_controlnet, load_controlnet
from .unet_attention import AttentionCapture


class UNetAdapter(ModelAdapter):
    """A diffusers pipeline with a ``UNet2DConditionModel`` and an ``AutoencoderKL``."""

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)
        self.unet = pipeline.unet
        self.denoiser = self.unet
        self.latent_channels = int(self.unet.config.in_channels)
        self.native_size = int(self.unet.config.sample_size) * self.vae_scale_factor

    @classmethod
    def folder_info(cls, folder: Path, location: str) -> dict[str, Any]:
        unet = read_config(folder, "unet/config.json", location)
        sample_size = unet.get("sample_size")
        if not positive_int(sample_size):
            raise ModelError(f"model folder {location!r}: unet/config.json key 'sample_size' is "
                             f"{'missing' if 'sample_size' not in unet else repr(sample_size)}; "
                             "expected a positive integer")
        vae_factor = vae_scale_factor(folder, location)
        latent_channels = unet.get("in_channels", 4)
        return {"native_size": sample_size * vae_factor, "vae_scale_factor": vae_factor,
                "latent_channels": latent_channels if positive_int(latent_channels) else 4, "denoiser": "unet",
                "patch_size": cls.patch_size}

    def attention_capture(self, factor: int) -> AttentionCapture:
        """Recording processors on the UNet's cross-attention layers at ``1/factor`` of the latent side."""
        return AttentionCapture(self.unet, factor)

    def unet_kwargs(self, n: int, cond: Conditioning, positions: Optional[torch.Tensor],
                    target_size: tuple[int, int]) -> dict[str, Any]:
        """The family's extra UNet (and ControlNet) keyword arguments for ``n`` rows."""
        return {}

    def predict(self, latents, timestep, cond, positions, target_size, **residuals):
        dtype = self.dtype
        out = self.unet(
            latents.to(self.device, dtype), timestep, encoder_hidden_states=cond.embeds.to(self.device, dtype),
            return_dict=False, **self.unet_kwargs(latents.shape[0], cond, positions, target_size),
            **_cast_residuals(residuals, self.device, dtype),
        )[0]
        return out.float()

    # -- ControlNets ----------------------------------------------------------------

    def load_controlnet(self, location: str) -> Any:
        return load_controlnet(location, self.dtype, self.device, unet=self.unet,
                               vae_scale_factor=self.vae_scale_factor)

    def check_controlnet(self, controlnet: Any, location: str) -> None:
        check_controlnet(dict(controlnet.config), dict(self.unet.config), self.vae_scale_factor, location)

    def control_residuals(self, controlnet, latents, timestep, cond, positions, target_size, images, scale):
        """A diffusers ``ControlNetModel``'s down and mid residuals (the family's added conditioning included)."""
        dtype = controlnet.dtype
        down, mid = controlnet(
            latents.to(self.device, dtype), timestep, encoder_hidden_states=cond.embeds.to(self.device, dtype),
            controlnet_cond=images.to(self.device, dtype), conditioning_scale=float(scale), return_dict=False,
            **self.unet_kwargs(latents.shape[0], cond, positions, target_size),
        )
        return list(down), mid


class SDXLAdapter(UNetAdapter):
    """SDXL: two text encoders, pooled embeddings, micro-conditioning time ids.

    ``original_size = target_size =`` the final image size for every phase, as
    in the release; ``crops_coords_top_left`` is ``(0, 0)`` except for local
    windows, where it is the window's position in image pixels.
    """

    family = "sdxl"

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return Conditioning(embeds, pooled)

    def encode_negative(self, prompt: str, negative_prompt: str) -> Conditioning:
        _, neg, _, neg_pooled = self.pipeline.encode_prompt(
            prompt=[prompt], device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=True,
            negative_prompt=[negative_prompt],
        )
        return Conditioning(neg, neg_pooled)

    def unet_kwargs(self, n, cond, positions, target_size):
        h, w = target_size
        time_ids = torch.tensor([h, w, 0, 0, h, w], dtype=torch.float32).repeat(n, 1)
        if positions is not None:
            time_ids[:, 2:4] = (positions * self.vae_scale_factor).float()
        dtype = self.dtype
        # time_ids stay float32: the UNet projects them with sinusoidal
        # embeddings and casts the result to its own dtype (diffusers'
        # ``get_aug_embed``); cast first, bfloat16 would turn 3000 into 3008.
        added = {
            "text_embeds": cond.pooled.to(self.device, dtype),
            "time_ids": time_ids.to(self.device, torch.float32),
        }
        return {"added_cond_kwargs": added}


class SDAdapter(UNetAdapter):
    """SD 1.x / 2.x: one text encoder, no added conditioning (epsilon or v prediction)."""

    family = "sd"

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        embeds, _ = self.pipeline.encode_prompt(list(prompts), self.device, 1, False)
        return Conditioning(embeds)

    def encode_negative(self, prompt: str, negative_prompt: str) -> Conditioning:
        _, neg = self.pipeline.encode_prompt([prompt], self.device, 1, True, negative_prompt=[negative_prompt])
        return Conditioning(neg)


def _cast_residuals(residuals: dict[str, Any], device: Any, dtype: torch.dtype) -> dict[str, Any]:
    """ControlNet residuals on the UNet's device and dtype (``None`` values dropped)."""
    out: dict[str, Any] = {}
    down = residuals.get("down_block_additional_residuals")
    if down is not None:
        out["down_block_additional_residuals"] = [t.to(device, dtype) for t in down]
    mid = residuals.get("mid_block_additional_residual")
    if mid is not None:
        out["mid_block_additional_residual"] = mid.to(device, dtype)
    return out


SDXL_FAMILY = ModelFamily("sdxl", SDXLAdapter, ("StableDiffusionXLPipeline",),
                          "SDXL 1.0 and its fine-tunes (two CLIP text encoders, micro-conditioning)",
                          single_file="StableDiffusionXLPipeline", label="SDXL")
SD_FAMILY = ModelFamily("sd", SDAdapter, ("StableDiffusionPipeline",),
                        "Stable Diffusion 1.x / 2.x (one CLIP text encoder; epsilon or v prediction)",
                        single_file="StableDiffusionPipeline", label="SD 1.x/2.x")
