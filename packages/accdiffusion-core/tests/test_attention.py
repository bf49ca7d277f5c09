"""Phase-1 cross-attention capture (method section 1)."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from accdiffusion.adapters import SDAdapter, SDXLAdapter
from accdiffusion.models.unet_attention import AttentionCapture, select_layers


def _inputs(adapter, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, adapter.latent_channels, h, w, generator=g)
    cond = adapter.encode_prompts(["a red circle and a blue square"])
    uncond = adapter.encode_negative("a red circle and a blue square", "blurry")
    both = type(cond)(torch.cat([uncond.embeds, cond.embeds]),
                      None if cond.pooled is None else torch.cat([uncond.pooled, cond.pooled]))
    return x, both


@pytest.fixture(params=["sdxl", "sd15"])
def adapter(request, tiny_sdxl_pipeline, tiny_sd15_pipeline):
    return SDXLAdapter(tiny_sdxl_pipeline) if request.param == "sdxl" else SDAdapter(tiny_sd15_pipeline)


def test_selects_only_down_and_up_cross_attention_at_quarter_resolution(adapter):
    layers = select_layers(adapter.unet, 4)
    assert layers, "tiny models have cross-attention at 1/4"
    assert all(".attn2." in n and not n.startswith("mid_block") for n in layers)
    assert any(n.startswith("down_blocks.2.") for n in layers)
    up = "up_blocks.0." if adapter.family == "sdxl" else "up_blocks.1."
    assert any(n.startswith(up) for n in layers)
    assert all(n.startswith(("down_blocks.2.", up)) for n in layers)


def test_capture_changes_no_output_and_restores_processors(adapter):
    unet = adapter.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    x, cond = _inputs(adapter, 16, 24)
    with torch.no_grad():
        ref = adapter.predict(x, torch.tensor(500), cond, None, (64, 64))
        with AttentionCapture(unet, 4) as cap:
            changed = [k for k, v in unet.attn_processors.items() if type(v) is not before[k]]
            out = adapter.predict(x, torch.tensor(500), cond, None, (64, 64))
    assert sorted(changed) == sorted(cap.layers)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    assert all(v is AttnProcessor2_0 for k, v in before.items() if k not in cap.layers)
    assert torch.allclose(out, ref, atol=1e-5)


def test_recorded_maps_equal_a_reference_computation_on_a_non_square_latent(adapter):
    """The running mean over steps, layers and heads of the conditional half,
    reshaped row-major to (h, w), against diffusers' reference processor."""
    unet = adapter.unet
    x, cond = _inputs(adapter, 16, 24)
    layers = select_layers(unet, 4)
    modules = dict(unet.named_modules())
    saved = unet.attn_processors
    seen = []

    def spy(attn, q, k, mask=None, _orig=None):
        probs = _orig(q, k, mask)
        b = probs.shape[0] // attn.heads
        seen.append(probs.reshape(b, attn.heads, *probs.shape[1:])[b // 2:].mean(dim=(0, 1)))
        return probs

    try:
        for name in layers:
            mod = modules[name[: -len(".processor")]]
            mod.set_processor(AttnProcessor())
            orig = mod.get_attention_scores
            mod.get_attention_scores = lambda q, k, mask=None, attn=mod, orig=orig: spy(attn, q, k, mask, orig)
        with torch.no_grad():
            for t in (900, 400):
                adapter.predict(x, torch.tensor(t), cond, None, (64, 64))
    finally:
        for name in layers:
            mod = modules[name[: -len(".processor")]]
            del mod.get_attention_scores
        unet.set_attn_processor(saved)
    reference = torch.stack(seen).mean(0)

    with torch.no_grad(), AttentionCapture(unet, 4) as cap:
        for t in (900, 400):
            adapter.predict(x, torch.tensor(t), cond, None, (64, 64))
    words = adapter.word_tokens("a red circle and a blue square")
    assert words == ("a", "red", "circle", "and", "a", "blue", "square")
    maps = cap.recorder.maps(16, 24, len(words), 4, words)
    assert maps.maps.shape == (4, 6, 7)  # (h, w), not (w, h)
    assert cap.recorder.count == 2 * len(layers)
    assert torch.allclose(maps.maps, reference[:, 1:8].reshape(4, 6, 7), atol=1e-5)
    # each pixel's probabilities over the whole text sum to one
    total = cap.recorder.total / cap.recorder.count
    assert torch.allclose(total.sum(-1), torch.ones(24), atol=1e-4)


def test_no_layer_at_the_factor_is_a_clear_error(adapter):
    with pytest.raises(ValueError, match="no cross-attention layers at 1/64"):
        AttentionCapture(adapter.unet, 64)
