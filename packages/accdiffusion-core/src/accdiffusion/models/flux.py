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

from typing import Any, Optional, Sequence

import torch

from ..attention import AttentionRecorder
from ..types import Conditioning
from .base import ModelFamily
from .flow import FlowTransformerAdapter, JointAttentionCapture

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


class FluxJointCapture(JointAttentionCapture):
    """Phase-1 image-to-text attention of every double-stream block of a
    ``FluxTransformer2DModel`` (T5 has no BOS: the prompt starts at text position 0)."""

    processor = RecordingJointProcessor


class FluxAdapter(FlowTransformerAdapter):
    """FLUX.1-dev / schnell through diffusers' ``FluxPipeline``."""

    family = "flux"
    packed = 4
    label = "FLUX"

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)
        self.tokenizer = pipeline.tokenizer_2  # the T5 tokens are the joint attention's text tokens
        self.guidance = "embedded" if bool(self.transformer.config.guidance_embeds) else "cfg"
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, int(self.tokenizer.model_max_length))

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

    def predict(self, latents, timestep, cond, positions, target_size, **extra):
        guidance = extra.pop("guidance", None)
        self._refuse_residuals(extra)
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

    def attention_capture(self, factor: int) -> FluxJointCapture:
        """Joint-attention capture in every double-stream block (``factor`` is a UNet setting, not used)."""
        return FluxJointCapture(self.transformer)


FLUX_FAMILY = ModelFamily("flux", FluxAdapter, ("FluxPipeline",),
                          "FLUX.1-dev / schnell (rectified-flow transformer, T5 + CLIP, joint attention)",
                          label="FLUX.1")
