"""Model families: adapters, noise schedules and attention capture.

* :mod:`.base`: :class:`ModelAdapter` (the seam the sampler talks to) and
  :class:`ModelFamily` (an adapter class and the pipelines it claims);
* :mod:`.noise`: discrete-time and flow-matching schedules behind one interface;
* :mod:`.text`: tokens and whole words of a prompt;
* :mod:`.unet`, :mod:`.unet_attention`, :mod:`.controlnet`: the SDXL and SD families;
* :mod:`.flux`: FLUX.1 (dev, schnell), joint-attention capture;
* :mod:`.sd3`: SD3 / SD3.5.

Families are registered through the ``accdiffusion_register_model_families``
hook; :data:`BUILTIN_FAMILIES` are the core's own, registered the same way.
"""

from .base import GUIDANCE_MODES, TILED_VAE_ABOVE, ModelAdapter, ModelFamily
from .flux import FLUX_FAMILY, FluxAdapter
from .sd3 import SD3_FAMILY, SD3Adapter
from .noise import DiscreteTimeNoise, FlowMatchNoise, noise_for, schedule_for
from .unet import SD_FAMILY, SDXL_FAMILY, SDAdapter, SDXLAdapter, UNetAdapter

#: The core's families, in the order they are asked (single-file checkpoints: SDXL, then SD).
BUILTIN_FAMILIES = (SDXL_FAMILY, SD_FAMILY, FLUX_FAMILY, SD3_FAMILY)

__all__ = ["BUILTIN_FAMILIES", "DiscreteTimeNoise", "FLUX_FAMILY", "FluxAdapter", "SD3Adapter", "SD3_FAMILY", "FlowMatchNoise", "GUIDANCE_MODES", "ModelAdapter",
           "ModelFamily", "SDAdapter", "SDXLAdapter", "SD_FAMILY", "SDXL_FAMILY", "TILED_VAE_ABOVE", "UNetAdapter",
           "noise_for", "schedule_for"]
