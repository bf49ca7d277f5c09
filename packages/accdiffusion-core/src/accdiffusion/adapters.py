"""Model adapters (kept for imports of ``accdiffusion.adapters``): they live in
:mod:`accdiffusion.models`, one module per family."""

from .models.base import TILED_VAE_ABOVE, ModelAdapter, ModelFamily
from .models.text import END_OF_WORD
from .models.unet import SDAdapter, SDXLAdapter, UNetAdapter

__all__ = ["END_OF_WORD", "ModelAdapter", "ModelFamily", "SDAdapter", "SDXLAdapter", "TILED_VAE_ABOVE", "UNetAdapter"]
