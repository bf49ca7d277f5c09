"""Model adapters: what the UNet receives."""

import torch

from accdiffusion.adapters import SDXLAdapter
from accdiffusion.loading import load_pipeline


def test_sdxl_time_ids_reach_the_unet_exact_in_bfloat16(tiny_sdxl_path):
    """bfloat16 has 8 significant bits: 3000 would become 3008 and 1000 stays 1000.
    The micro-conditioning ids must reach the UNet's time projection in float32."""
    assert torch.tensor(3000.0).to(torch.bfloat16).item() == 3008.0
    adapter = SDXLAdapter(load_pipeline(str(tiny_sdxl_path), dtype="bfloat16"))
    assert adapter.dtype == torch.bfloat16
    seen = []
    handle = adapter.unet.add_time_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        cond = adapter.encode_prompts(["a red circle", "a blue square"])
        latents = torch.randn(2, adapter.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = adapter.predict(latents, torch.tensor(500), cond, torch.tensor([[0, 0], [500, 1004]]),
                                  (3000, 3001))
    finally:
        handle.remove()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    (ids,) = seen
    assert ids.dtype == torch.float32
    assert ids.tolist() == [3000, 3001, 0, 0, 3000, 3001, 3000, 3001, 1000, 2008, 3000, 3001]
