"""FLUX.1 (dev and schnell): a rectified-flow diffusion transformer with joint attention.

What differs from the UNet families, all of it inside this module:

* **Views as tokens.** The canvas stays ``(1, C, H, W)`` (16 latent
  channels); :meth:`FluxAdapter.predict` packs each view into 2x2 patches
  (``patch_size = 2``), builds the image position ids and unpacks the
  velocity it predicts. A view's ids are a native image's (rows and columns
  from 0), so a local window is denoised as a whole native-size image, as a
  UNet window is; ``positions`` are not used.
* **Guidance.** FLUX.1-dev takes the guidance scale as an input
  (``guidance = "embedded"``: one row per view, no unconditional pass);
  FLUX.1-schnell has no guidance embedding (``"cfg"``, used only above 1).
* **Noise.** ``FlowMatchEulerDiscreteScheduler`` through
  :class:`~accdiffusion.models.noise.FlowMatchNoise`: noise inversion and the
  skip residual are the flow interpolation at the timestep's sigma; the shift
  ``mu`` comes from one view's token count (the native image's).
* **Text.** The T5 prompt embeddings are the joint attention's text tokens,
  so words and their maps come from the T5 tokenizer (SentencePiece marks,
  no BOS token); the CLIP encoder gives the pooled projection.
* **Patch prompts from joint attention.** :class:`JointAttentionCapture`
  records, in every double-stream block, the image queries' attention to the
  text keys (after RoPE and the q/k norms), softmaxed over the text tokens
  as a cross-attention map is; the block's own output is computed by its
  original processor, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..attention import AttentionRecorder
from ..configs import positive_int, read_config, vae_scale_factor
from ..errors import ModelError
from ..types import Conditioning
from .base import ModelAdapter, ModelFamily
from .noise import FlowMatchNoise, schedule_for

#: FluxPipeline's default latent side (1024 px at a VAE factor of 8).
DEFAULT_SAMPLE_SIZE = 128
#: The longest T5 prompt FLUX.1 is used with.
MAX_SEQUENCE_LENGTH = 512


def pack(latents: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` to FLUX's tokens ``(N, h/2 * w/2, 4C)`` (2x2 patches, row-major)."""
    n, c, h, w = latents.shape
    x = latents.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """FLUX's tokens ``(N, h/2 * w/2, 4C)`` back to ``(N, C, h, w)`` (inverse of :func:`pack`)."""
    n, _, d = tokens.shape
    x = tokens.view(n, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, d // 4, h, w)


def image_ids(h: int, w: int, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Position ids ``(h/2 * w/2, 3)`` of a native image's tokens: ``(0, row, column)``."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class RecordingJointProcessor:
    """Wraps a double-stream block's attention processor: records the image
    queries' attention over the text keys, then runs the original processor."""

    def __init__(self, original: Any, recorder: AttentionRecorder) -> None:
        self.original = original
        self.recorder = recorder

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor = None,
                 attention_mask: Optional[torch.Tensor] = None,
                 image_rotary_emb: Optional[torch.Tensor] = None) -> Any:
        if encoder_hidden_states is not None:
            self._record(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    def _record(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                image_rotary_emb: Optional[torch.Tensor]) -> None:
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        query, key, _, encoder_query, encoder_key, _ = _get_qkv_projections(attn, hidden_states,
                                                                            encoder_hidden_states)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        encoder_query = attn.norm_added_q(encoder_query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        encoder_key = attn.norm_added_k(encoder_key.unflatten(-1, (-1, attn.head_dim)))
        query = torch.cat([encoder_query, query], dim=1)
        key = torch.cat([encoder_key, key], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        n_text = encoder_hidden_states.shape[1]
        batch = query.shape[0]
        half = batch // 2 if self.recorder.cfg else 0
        q = query[half:, n_text:].float().transpose(1, 2)  # (B, heads, image tokens, d)
        k = key[half:, :n_text].float().transpose(1, 2)  # (B, heads, text tokens, d)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (attn.head_dim ** -0.5)
        self.recorder.add(scores.softmax(dim=-1))


class JointAttentionCapture:
    """Records phase 1's image-to-text attention in every double-stream block
    of a ``FluxTransformer2DModel`` and restores the processors on exit.

    Maps have one pixel per token, ``(h/2, w/2)`` for an ``h x w`` latent
    (:meth:`grid`), each covering 2 latent pixels; T5 has no BOS token, so the
    prompt's tokens start at text position 0."""

    latent_per_map = 2

    def __init__(self, transformer: Any) -> None:
        self.transformer = transformer
        self.recorder = AttentionRecorder(first_token=0)
        self.blocks = list(getattr(transformer, "transformer_blocks", ()))
        if not self.blocks:
            raise ModelError("the FLUX transformer has no double-stream blocks to read joint attention from")
        self._saved: list[Any] = []

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // 2, width // 2

    def __enter__(self) -> "JointAttentionCapture":
        self._saved = [block.attn.processor for block in self.blocks]
        for block, original in zip(self.blocks, self._saved):
            block.attn.processor = RecordingJointProcessor(original, self.recorder)
        return self

    def __exit__(self, *exc: Any) -> None:
        for block, original in zip(self.blocks, self._saved):
            block.attn.processor = original
        self._saved = []


class FluxAdapter(ModelAdapter):
    """FLUX.1-dev / schnell through diffusers' ``FluxPipeline``."""

    family = "flux"
    patch_size = 2

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)
        self.transformer = pipeline.transformer
        self.denoiser = self.transformer
        config = self.transformer.config
        self.tokenizer = pipeline.tokenizer_2  # the T5 tokens are the joint attention's text tokens
        self.latent_channels = int(config.in_channels) // 4
        sample = config.get("sample_size") if hasattr(config, "get") else getattr(config, "sample_size", None)
        sample = sample if positive_int(sample) else int(getattr(pipeline, "default_sample_size", DEFAULT_SAMPLE_SIZE))
        self.native_size = int(sample) * self.vae_scale_factor
        self.guidance = "embedded" if bool(config.guidance_embeds) else "cfg"
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, int(self.tokenizer.model_max_length))

    @classmethod
    def folder_info(cls, folder: Path, location: str) -> dict[str, Any]:
        transformer = read_config(folder, "transformer/config.json", location)
        channels = transformer.get("in_channels")
        if not (positive_int(channels) and channels % 4 == 0):
            raise ModelError(f"model folder {location!r}: transformer/config.json key 'in_channels' is "
                             f"{'missing' if 'in_channels' not in transformer else repr(channels)}; "
                             "expected a positive multiple of 4 (2x2 packed latent channels)")
        vae_factor = vae_scale_factor(folder, location)
        sample = transformer.get("sample_size")
        sample = sample if positive_int(sample) else DEFAULT_SAMPLE_SIZE
        return {"native_size": sample * vae_factor, "vae_scale_factor": vae_factor,
                "latent_channels": channels // 4, "denoiser": "transformer", "patch_size": cls.patch_size}

    @property
    def max_prompt_tokens(self) -> int:
        return self.max_sequence_length

    # -- text -------------------------------------------------------------------------

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        embeds, pooled, _ = self.pipeline.encode_prompt(prompt=list(prompts), prompt_2=None, device=self.device,
                                                        num_images_per_prompt=1,
                                                        max_sequence_length=self.max_sequence_length)
        return Conditioning(embeds, pooled)

    def encode_negative(self, prompt: str, negative_prompt: str) -> Conditioning:
        """The negative prompt's row (used only without guidance embedding, above scale 1)."""
        return self.encode_prompts([negative_prompt])

    # -- denoising ----------------------------------------------------------------------

    def noise_schedule(self, scheduler: Any) -> FlowMatchNoise:
        noise = schedule_for(scheduler)
        if not isinstance(noise, FlowMatchNoise):
            raise ModelError(f"FLUX is a flow-matching model: the scheduler {type(scheduler).__name__} does not fit "
                             "it; allowed: --scheduler default (its FlowMatchEulerDiscreteScheduler)")
        return noise

    def predict(self, latents, timestep, cond, positions, target_size, **extra):
        guidance = extra.pop("guidance", None)
        if any(v is not None for v in extra.values()):
            raise ModelError("FLUX takes no ControlNet residuals here; allowed: --structure-guidance none")
        n, _, h, w = latents.shape
        dtype, device = self.dtype, self.device
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[:1].expand(n)
        kwargs = {}
        if self.guidance == "embedded":
            g = torch.full((n,), 1.0) if guidance is None else torch.as_tensor(guidance, dtype=torch.float32)
            kwargs["guidance"] = g.to(device, torch.float32)
        out = self.transformer(
            hidden_states=pack(latents.to(device, dtype)),
            timestep=(t / 1000).to(device, dtype),
            pooled_projections=cond.pooled.to(device, dtype),
            encoder_hidden_states=cond.embeds.to(device, dtype),
            txt_ids=torch.zeros(cond.embeds.shape[1], 3, device=device, dtype=dtype),
            img_ids=image_ids(h, w, device, dtype),
            return_dict=False,
            **kwargs,
        )[0]
        return unpack(out.float(), h, w)

    def attention_capture(self, factor: int) -> JointAttentionCapture:
        """Joint-attention capture in every double-stream block (``factor`` is a UNet setting, not used)."""
        return JointAttentionCapture(self.transformer)


FLUX_FAMILY = ModelFamily("flux", FluxAdapter, ("FluxPipeline",),
                          "FLUX.1-dev / schnell (rectified-flow transformer, T5 + CLIP, joint attention)",
                          label="FLUX.1")
