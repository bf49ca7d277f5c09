"""ControlNets of the UNet families: a folder or hub id loaded, and checked to fit the UNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from ..configs import DTYPES, read_config
from ..errors import ModelError

CONTROLNET_CLASS = "ControlNetModel"


def unet_family_label(config: dict[str, Any]) -> str:
    return "SDXL" if config.get("addition_embed_type") == "text_time" else "SD 1.x/2.x"


def check_controlnet(config: dict[str, Any], unet_config: dict[str, Any], vae_scale_factor: int,
                     location: str) -> None:
    """:class:`ModelError` naming ``location`` when the ControlNet ``config``
    does not fit the base UNet: another family (``addition_embed_type``),
    another text width (``cross_attention_dim``), other latent or block
    channels (``in_channels``, ``block_out_channels``), or a control image
    embedding that does not downsample by the VAE's factor."""
    what = f"ControlNet {location!r}"
    checks = (("addition_embed_type", "family"), ("cross_attention_dim", "text embedding width"),
              ("in_channels", "latent channels"), ("block_out_channels", "block channels"),
              ("projection_class_embeddings_input_dim", "SDXL added-conditioning width"))
    for key, meaning in checks:
        a, b = config.get(key), unet_config.get(key)
        if isinstance(a, tuple):
            a = list(a)
        if isinstance(b, tuple):
            b = list(b)
        if a != b:
            raise ModelError(f"{what} does not fit the model: its {meaning} ({key}={a!r}, a {unet_family_label(config)} "
                             f"ControlNet) differs from the model's UNet ({key}={b!r}, {unet_family_label(unet_config)}); "
                             "allowed: a ControlNet trained for this base model's family")
    channels = config.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)
    factor = 2 ** (len(channels) - 1)
    if factor != vae_scale_factor:
        raise ModelError(f"{what} does not fit the model: its control-image embedding downsamples by {factor} "
                         f"(conditioning_embedding_out_channels={list(channels)!r}), the model's VAE by "
                         f"{vae_scale_factor}; allowed: a ControlNet whose embedding matches the VAE factor")


def load_controlnet(location: str, dtype: Any = torch.float32, device: Any = "cpu", *, unet: Any = None,
                    vae_scale_factor: Optional[int] = None) -> Any:
    """A diffusers ``ControlNetModel`` from a local folder or a hub id, in
    ``dtype`` on ``device``. A local folder's ``config.json`` is read and, when
    ``unet`` is given, checked against it (:func:`check_controlnet`) before
    the weights load; :class:`ModelError` naming the location otherwise."""
    import diffusers

    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    path = Path(location)
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"ControlNet {location!r} is a file; allowed: a diffusers ControlNetModel folder "
                             "(config.json and its weights) or a hub id")
        config = read_config(path, "config.json", location)
        if config.get("_class_name") != CONTROLNET_CLASS:
            raise ModelError(f"ControlNet {location!r} holds a {config.get('_class_name')!r} (config.json, key "
                             f"'_class_name'); allowed: a diffusers {CONTROLNET_CLASS} folder")
        if unet is not None:
            check_controlnet(config, dict(unet.config), vae_scale_factor or 8, location)
    try:
        model = diffusers.ControlNetModel.from_pretrained(location, torch_dtype=torch_dtype)
    except Exception as exc:  # noqa: BLE001 - wrap loader errors with the location
        raise ModelError(f"cannot load ControlNet {location!r}: {exc}") from exc
    if unet is not None and not path.exists():
        check_controlnet(dict(model.config), dict(unet.config), vae_scale_factor or 8, location)
    return model.to(device).eval()
