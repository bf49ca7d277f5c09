"""Stable Diffusion 3 / 3.5: a rectified-flow MMDiT with CLIP-L, CLIP-G and T5 text.

Inside this module only:

* **Views.** The transformer patchifies ``(N, 16, h, w)`` views itself
  (patch size 2) and crops its position table at the centre for a view's
  size, so every view is a native image; ``positions`` are not used.
* **Guidance.** Classifier-free guidance rows, as SDXL.
* **Noise.** ``FlowMatchEulerDiscreteScheduler`` with SD3's static shift
  (3.0): flow interpolation for noise inversion and the skip residual.
* **Text.** The joint attention's text tokens are CLIP's 77 (both CLIP
  encoders side by side, BOS first) followed by T5's; words and their maps
  come from the CLIP tokenizer, as for SDXL.
* **Patch prompts from joint attention.** :class:`SD3JointCapture` records,
  in every joint block, the image queries' attention over the text keys
  (after the q/k norms), softmaxed over the text tokens; the block's output is
  its original processor's.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..attention import AttentionRecorder
from ..types import Conditioning
from .base import ModelFamily
from .flow import FlowTransformerAdapter, JointAttentionCapture

#: SD3's usual T5 window.
MAX_SEQUENCE_LENGTH = 256


class RecordingSD3Processor:
    """Wraps a joint block's processor: records the image queries' attention
    over the text keys, then runs the original processor."""

    def __init__(self, original: Any, recorder: AttentionRecorder) -> None:
        self.original = original
        self.recorder = recorder

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor = None,
                 attention_mask: Optional[torch.Tensor] = None, *args: Any, **kwargs: Any) -> Any:
        if encoder_hidden_states is not None:
            self._record(attn, hidden_states, encoder_hidden_states)
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)

    def _record(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = attn.add_k_proj(encoder_hidden_states).view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_added_k is not None:
            key = attn.norm_added_k(key)
        half = batch // 2 if self.recorder.cfg else 0
        scores = torch.matmul(query[half:].float(), key[half:].float().transpose(-1, -2)) * (head_dim ** -0.5)
        self.recorder.add(scores.softmax(dim=-1))


class SD3JointCapture(JointAttentionCapture):
    """Phase-1 image-to-text attention of every joint block of an ``SD3Transformer2DModel``
    (one map pixel per 2x2 patch; CLIP's BOS is text position 0)."""

    processor = RecordingSD3Processor


class SD3Adapter(FlowTransformerAdapter):
    """SD3 / SD3.5 through diffusers' ``StableDiffusion3Pipeline``."""

    family = "sd3"
    label = "SD3"

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)
        t5 = getattr(pipeline, "tokenizer_3", None)
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, int(t5.model_max_length)) if t5 is not None \
            else MAX_SEQUENCE_LENGTH

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=list(prompts), prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length)
        return Conditioning(embeds, pooled)

    def encode_negative(self, prompt: str, negative_prompt: str) -> Conditioning:
        _, neg, _, neg_pooled = self.pipeline.encode_prompt(
            prompt=[prompt], prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=True, negative_prompt=[negative_prompt],
            max_sequence_length=self.max_sequence_length)
        return Conditioning(neg, neg_pooled)

    def predict(self, latents, timestep, cond, positions, target_size, **extra):
        self._refuse_residuals(extra)
        n = latents.shape[0]
        dtype, device = self.dtype, self.device
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[:1].expand(n)
        out = self.transformer(hidden_states=latents.to(device, dtype), timestep=t.to(device, dtype),
                               encoder_hidden_states=cond.embeds.to(device, dtype),
                               pooled_projections=cond.pooled.to(device, dtype), return_dict=False)[0]
        return out.float()

    def attention_capture(self, factor: int) -> SD3JointCapture:
        """Joint-attention capture in every joint block (``factor`` is a UNet setting, not used)."""
        return SD3JointCapture(self.transformer, first_token=1)


SD3_FAMILY = ModelFamily("sd3", SD3Adapter, ("StableDiffusion3Pipeline",),
                         "Stable Diffusion 3 / 3.5 (rectified-flow MMDiT, CLIP-L + CLIP-G + T5, joint attention)",
                         label="SD3")
