"""A tiny random-weight FLUX.1 pipeline, built offline.

:func:`make_tiny_flux` writes a ``FluxPipeline`` folder: a one-double-block,
one-single-block ``FluxTransformer2DModel`` (native size 32 px: latent side 16,
``sample_size`` in its config), a three-level VAE (``vae_scale_factor`` 4, 16
latent channels, FLUX's scaling and shift factors), the offline CLIP
tokenizer and text encoder of the other tiny models (pooled projection) and a
tiny T5 encoder with :func:`write_t5_tokenizer` (SentencePiece-style
``\u2581`` word marks, no BOS, ``</s>`` appended). The scheduler is FLUX.1-dev's
``FlowMatchEulerDiscreteScheduler`` (dynamic shift by token count).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .tokenizer import DEFAULT_WORDS

#: The tiny model's native size in pixels, latent side and T5 window.
FLUX_NATIVE_SIZE = 32
FLUX_LATENT_SIZE = 8
T5_MAX_LENGTH = 32

FLUX_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
}

_SPECIALS = ("<pad>", "</s>", "<unk>")
_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def write_t5_tokenizer(folder: str | Path, words=DEFAULT_WORDS) -> Path:
    """A T5-style tokenizer in ``folder`` (``T5TokenizerFast.from_pretrained`` loads it):
    a Unigram vocabulary of ``<pad>`` (0), ``</s>`` (1), ``<unk>`` (2), one
    ``\u2581word`` piece per listed word and single characters (with and
    without ``\u2581``) for any other word; built from the list, not trained,
    so the files are the same every time."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = [(s, 0.0) for s in _SPECIALS]
    seen = set(_SPECIALS)
    for w in dict.fromkeys(w.lower() for w in words):
        piece = "\u2581" + w
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, -5.0 - 0.001 * len(vocab)))
    for ch in _LETTERS:
        for piece in ("\u2581" + ch, ch):
            if piece not in seen:
                seen.add(piece)
                vocab.append((piece, -20.0))
    vocab.append(("\u2581", -30.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                      special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=T5_MAX_LENGTH)
    fast.save_pretrained(folder)
    return folder


def make_tiny_flux(folder: str | Path, *, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """Write a tiny random-weight ``FluxPipeline`` to ``folder`` (see the module docstring)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    from .models import _text_config, _tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip_tok = _tokenizer(folder / "_clip_tokenizer")
    t5_tok = T5TokenizerFast.from_pretrained(write_t5_tokenizer(folder / "_t5_tokenizer"))
    torch.manual_seed(seed)
    clip = CLIPTextModel(_text_config(clip_tok, projection_dim=32, hidden_act="gelu", hidden_size=32)).eval()
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)).eval()
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(2, 2, 4)).eval()
    transformer.register_to_config(sample_size=FLUX_LATENT_SIZE)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16),
                        layers_per_block=1, latent_channels=16, norm_num_groups=4, sample_size=FLUX_NATIVE_SIZE,
                        scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                        use_post_quant_conv=False).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG), vae=vae,
                        text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok,
                        transformer=transformer)
    pipe.save_pretrained(folder)
    for tmp in ("_clip_tokenizer", "_t5_tokenizer"):
        for f in sorted((folder / tmp).iterdir()):
            f.unlink()
        (folder / tmp).rmdir()
    json.loads((folder / "model_index.json").read_text())  # written whole
    return folder


#: The tiny SD3 model's native size in pixels and latent side.
SD3_NATIVE_SIZE = 32
SD3_LATENT_SIZE = 8


def make_tiny_sd3(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random-weight ``StableDiffusion3Pipeline`` to ``folder``:
    a two-block ``SD3Transformer2DModel`` (patch size 2, native 32 px), a
    three-level VAE (factor 4, 16 latent channels, SD3's scaling and shift),
    two offline CLIP encoders with projections and the tiny T5, and SD3's
    ``FlowMatchEulerDiscreteScheduler`` (static shift 3.0)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, \
        StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel, T5TokenizerFast

    from .models import _text_config, _tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip_tok = _tokenizer(folder / "_clip_tokenizer")
    t5_tok = T5TokenizerFast.from_pretrained(write_t5_tokenizer(folder / "_t5_tokenizer"))
    torch.manual_seed(seed)
    clip_l = CLIPTextModelWithProjection(_text_config(clip_tok, projection_dim=16, hidden_act="gelu",
                                                      hidden_size=16)).eval()
    clip_g = CLIPTextModelWithProjection(_text_config(clip_tok, projection_dim=16, hidden_act="gelu",
                                                      hidden_size=16)).eval()
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)).eval()
    transformer = SD3Transformer2DModel(sample_size=SD3_LATENT_SIZE, patch_size=2, in_channels=16, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=32, out_channels=16,
                                        pos_embed_max_size=16).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16),
                        layers_per_block=1, latent_channels=16, norm_num_groups=4, sample_size=SD3_NATIVE_SIZE,
                        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                        use_post_quant_conv=False).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae, text_encoder=clip_l, tokenizer=clip_tok, text_encoder_2=clip_g, tokenizer_2=clip_tok,
        text_encoder_3=t5, tokenizer_3=t5_tok)
    pipe.save_pretrained(folder)
    for tmp in ("_clip_tokenizer", "_t5_tokenizer"):
        for f in sorted((folder / tmp).iterdir()):
            f.unlink()
        (folder / tmp).rmdir()
    return folder
