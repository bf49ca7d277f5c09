"""Model adapters: the one place that knows a model family's conventions.

An adapter wraps a loaded diffusers pipeline and gives the sampler a uniform
surface: text encoding, a UNet call with the family's extra conditioning,
VAE encode/decode, the prompt's word tokens. The built-in adapters (SDXL and
SD 1.5 / 2.1) claim pipelines through the ``accdiffusion_adapt_pipeline``
hook like any plugin's adapter would.
"""

from __future__ import annotations

import contextlib
import unicodedata
from typing import Any, Optional, Sequence

import torch

from .plugins import hookimpl
from .types import Conditioning

#: Images larger than this (px, either side) are encoded and decoded in VAE tiles.
TILED_VAE_ABOVE = 2048

#: CLIP's BPE vocabulary marks the last token of a word with this suffix.
END_OF_WORD = "</w>"


class ModelAdapter:
    """Uniform access to a text-to-image latent diffusion pipeline.

    Subclasses set :attr:`family` and implement :meth:`encode_prompts` and
    :meth:`predict`.
    """

    family = "base"

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.unet = pipeline.unet
        self.vae = pipeline.vae
        self.tokenizer = pipeline.tokenizer
        self.vae_scale_factor = int(getattr(pipeline, "vae_scale_factor", 8))
        self.latent_channels = int(self.unet.config.in_channels)
        self.native_size = int(self.unet.config.sample_size) * self.vae_scale_factor
        self.device: torch.device = pipeline._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    # -- text ---------------------------------------------------------------

    def _token_ids(self, prompt: str) -> list[int]:
        """The first tokenizer's ids of ``prompt`` without BOS/EOS, truncated to its window."""
        ids = self.tokenizer(prompt, truncation=True, max_length=self.tokenizer.model_max_length).input_ids
        return list(ids[1:-1])

    def word_tokens(self, prompt: str) -> tuple[str, ...]:
        """The prompt's tokens without BOS/EOS, one decoded string per token
        (the release's "words": a word split into several BPE tokens appears
        as its pieces, and a non-ASCII character split into byte-level pieces
        as U+FFFD characters).

        Tokens beyond the text encoder's window (77) are dropped, as the model
        never sees them.
        """
        return tuple(self.tokenizer.decode([i]) for i in self._token_ids(prompt))

    def word_groups(self, prompt: str) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
        """The prompt's whole words and, for each, the positions of its tokens
        in :meth:`word_tokens`.

        With a CLIP BPE tokenizer a word is a run of tokens ending with a token
        whose vocabulary entry ends in ``</w>`` (the tokenizer's words:
        letters, a digit, or a run of other non-space characters such as
        punctuation or an emoji; byte-level pieces of one character always fall
        in one word). Each word is decoded from its whole group of ids, so a
        split word or a multi-byte character comes out whole. Control
        characters (Unicode category ``Cc``) are removed from the text, and a
        word left empty is dropped, as is a last word cut by the text
        encoder's window (its ``</w>`` token was truncated away). A tokenizer
        without ``</w>`` marks (or without ``convert_ids_to_tokens``) gives one
        word per token of :meth:`word_tokens`.
        """
        convert = getattr(self.tokenizer, "convert_ids_to_tokens", None)
        if convert is None:
            tokens = self.word_tokens(prompt)
            return tokens, tuple((k,) for k in range(len(tokens)))
        ids = self._token_ids(prompt)
        pieces = [str(p) for p in convert(ids)]
        if not any(p.endswith(END_OF_WORD) for p in pieces):
            return tuple(self.tokenizer.decode([i]) for i in ids), tuple((k,) for k in range(len(ids)))
        words: list[str] = []
        groups: list[tuple[int, ...]] = []
        current: list[int] = []
        for k, piece in enumerate(pieces):
            current.append(k)
            if not piece.endswith(END_OF_WORD):
                continue
            text = self.tokenizer.decode([ids[j] for j in current])
            text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc").strip()
            if text:
                words.append(text)
                groups.append(tuple(current))
            current = []
        return tuple(words), tuple(groups)

    def prompt_token_count(self, prompt: str) -> int:
        """Number of tokens of ``prompt`` including BOS/EOS, untruncated."""
        return len(self.tokenizer(prompt).input_ids)

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Conditioning rows for ``prompts``."""
        raise NotImplementedError

    def encode_negative(self, prompt: str, negative_prompt: str) -> Conditioning:
        """The unconditional row for classifier-free guidance."""
        raise NotImplementedError

    # -- denoising ----------------------------------------------------------

    def predict(
        self,
        latents: torch.Tensor,
        timestep: Any,
        cond: Conditioning,
        crops_top_left: Optional[torch.Tensor],
        target_size: tuple[int, int],
        **residuals: Any,
    ) -> torch.Tensor:
        """The UNet's raw output for scheduler-scaled ``latents`` (one row of ``cond`` each).

        ``residuals``: only with structure guidance, ``down_block_additional_residuals``
        (a list of tensors) and ``mid_block_additional_residual``, added to the
        UNet's skip connections and middle block as diffusers' ControlNet
        pipelines do; without them the call is unchanged.
        """
        raise NotImplementedError

    def unet_kwargs(self, n: int, cond: Conditioning, crops_top_left: Optional[torch.Tensor],
                    target_size: tuple[int, int]) -> dict[str, Any]:
        """The family's extra UNet (and ControlNet) keyword arguments for ``n`` rows."""
        return {}

    def control_residuals(self, controlnet: Any, latents: torch.Tensor, timestep: Any, cond: Conditioning,
                          crops_top_left: Optional[torch.Tensor], target_size: tuple[int, int],
                          images: torch.Tensor, scale: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """A diffusers ``ControlNetModel``'s down and mid residuals for
        scheduler-scaled ``latents`` with control ``images`` ``(N, 3, H, W)`` in
        ``[0, 1]``, scaled by ``scale`` (the family's added conditioning included)."""
        dtype = controlnet.dtype
        down, mid = controlnet(
            latents.to(self.device, dtype), timestep, encoder_hidden_states=cond.embeds.to(self.device, dtype),
            controlnet_cond=images.to(self.device, dtype), conditioning_scale=float(scale), return_dict=False,
            **self.unet_kwargs(latents.shape[0], cond, crops_top_left, target_size),
        )
        return list(down), mid

    # -- codec --------------------------------------------------------------

    def encode_images(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` in ``[-1, 1]`` to scaled latents (the distribution's mode)."""
        vae = self.vae
        with self._vae_precision() as dtype, self._vae_tiling(max(images.shape[-2:])):
            dist = vae.encode(images.to(self.device, dtype)).latent_dist
            latents = dist.mode().float()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents to images ``(N, 3, H, W)`` in ``[-1, 1]`` (float32, on the model's device).

        Decoding is tiled when the image is larger than :data:`TILED_VAE_ABOVE`
        px on a side and the VAE supports tiling; it runs in float32 when the VAE asks for it
        (``force_upcast``, e.g. SDXL's VAE in float16).
        """
        vae = self.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        z = latents / vae.config.scaling_factor + shift
        with self._vae_precision() as dtype, self._vae_tiling(max(z.shape[-2:]) * self.vae_scale_factor):
            image = vae.decode(z.to(self.device, dtype), return_dict=False)[0]
        return image.float().clamp(-1, 1)

    @contextlib.contextmanager
    def _vae_tiling(self, side: int):
        """Tiled VAE work for images larger than :data:`TILED_VAE_ABOVE` px on a side."""
        tiled = side > TILED_VAE_ABOVE and hasattr(self.vae, "enable_tiling")
        if tiled:
            self.vae.enable_tiling()
        try:
            yield
        finally:
            if tiled:
                self.vae.disable_tiling()

    @contextlib.contextmanager
    def _vae_precision(self):
        vae = self.vae
        dtype = next(vae.parameters(), torch.empty(0)).dtype
        upcast = dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        if upcast:
            vae.to(torch.float32)
        try:
            yield torch.float32 if upcast else dtype
        finally:
            if upcast:
                vae.to(dtype)


class SDXLAdapter(ModelAdapter):
    """SDXL: two text encoders, pooled embeddings, micro-conditioning time ids.

    ``original_size = target_size =`` the final image size for every phase, as
    in the release; ``crops_coords_top_left`` is ``(0, 0)`` except for local
    windows.
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

    def predict(self, latents, timestep, cond, crops_top_left, target_size, **residuals):
        dtype = self.dtype
        out = self.unet(
            latents.to(self.device, dtype), timestep, encoder_hidden_states=cond.embeds.to(self.device, dtype),
            return_dict=False, **self.unet_kwargs(latents.shape[0], cond, crops_top_left, target_size),
            **_cast_residuals(residuals, self.device, dtype),
        )[0]
        return out.float()

    def unet_kwargs(self, n, cond, crops_top_left, target_size):
        h, w = target_size
        time_ids = torch.tensor([h, w, 0, 0, h, w], dtype=torch.float32).repeat(n, 1)
        if crops_top_left is not None:
            time_ids[:, 2:4] = crops_top_left.float()
        dtype = self.dtype
        # time_ids stay float32: the UNet projects them with sinusoidal
        # embeddings and casts the result to its own dtype (diffusers'
        # ``get_aug_embed``); cast first, bfloat16 would turn 3000 into 3008.
        added = {
            "text_embeds": cond.pooled.to(self.device, dtype),
            "time_ids": time_ids.to(self.device, torch.float32),
        }
        return {"added_cond_kwargs": added}


class SDAdapter(ModelAdapter):
    """SD 1.x / 2.x: one text encoder, no added conditioning (epsilon or v prediction)."""

    family = "sd"

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        embeds, _ = self.pipeline.encode_prompt(list(prompts), self.device, 1, False)
        return Conditioning(embeds)

    def encode_negative(self, prompt: str, negative_prompt: str) -> Conditioning:
        _, neg = self.pipeline.encode_prompt([prompt], self.device, 1, True, negative_prompt=[negative_prompt])
        return Conditioning(neg)

    def predict(self, latents, timestep, cond, crops_top_left, target_size, **residuals):
        dtype = self.dtype
        out = self.unet(
            latents.to(self.device, dtype), timestep, encoder_hidden_states=cond.embeds.to(self.device, dtype),
            return_dict=False, **_cast_residuals(residuals, self.device, dtype),
        )[0]
        return out.float()


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


@hookimpl(trylast=True)
def accdiffusion_adapt_pipeline(pipeline: Any, settings: Any) -> Optional[ModelAdapter]:
    """Claim diffusers' SDXL and SD pipelines (and subclasses)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if isinstance(pipeline, StableDiffusionXLPipeline):
        return SDXLAdapter(pipeline)
    if isinstance(pipeline, StableDiffusionPipeline):
        return SDAdapter(pipeline)
    return None
