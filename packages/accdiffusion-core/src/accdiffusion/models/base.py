"""The model seam: what the sampler knows of a model, and how families register.

A :class:`ModelAdapter` wraps one loaded diffusers pipeline and is the only
code that knows the family's conventions. It declares what the core needs to
plan and batch (:attr:`~ModelAdapter.guidance`, :attr:`~ModelAdapter.patch_size`,
:attr:`~ModelAdapter.latent_channels`, :attr:`~ModelAdapter.vae_scale_factor`,
:attr:`~ModelAdapter.native_size`) and implements text encoding, the
denoiser call (:meth:`~ModelAdapter.predict`: views and their positions on
the canvas; packing, position ids and added conditioning stay inside),
phase-1 attention capture, the noise schedule and the VAE.

A :class:`ModelFamily` is one adapter class plus the pipeline classes it
claims; plugins register families through the
``accdiffusion_register_model_families`` hook (the built-in ``sdxl`` and
``sd`` families are registered the same way).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional, Sequence

import attrs
import torch

from ..errors import ModelError
from ..types import Conditioning
from . import text
from .noise import DiscreteTimeNoise, schedule_for

#: Images larger than this (px, either side) are encoded and decoded in VAE tiles.
TILED_VAE_ABOVE = 2048

#: The guidance modes an adapter may declare.
GUIDANCE_MODES = ("cfg", "embedded")


class ModelAdapter:
    """Uniform access to a text-to-image latent diffusion pipeline.

    Subclasses set :attr:`family`, :attr:`denoiser`, :attr:`latent_channels`
    and :attr:`native_size` and implement :meth:`encode_prompts`,
    :meth:`encode_negative` and :meth:`predict`; the rest has defaults.

    Declarations:

    * ``guidance``: ``"cfg"`` (classifier-free guidance: the executor adds an
      unconditional row per view and combines the two outputs) or
      ``"embedded"`` (the guidance scale is an input of the model, e.g.
      FLUX.1-dev: one row per view, ``predict(..., guidance=)`` gets each
      row's scale);
    * ``patch_size``: latent pixels per denoiser token side (1 for a UNet;
      window sizes and strides are multiples of it);
    * ``latent_channels``, ``vae_scale_factor``, ``native_size`` (px).
    """

    family = "base"
    guidance = "cfg"
    patch_size = 1

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.vae = pipeline.vae
        self.tokenizer = getattr(pipeline, "tokenizer", None)
        self.vae_scale_factor = int(getattr(pipeline, "vae_scale_factor", 8))
        self.device: torch.device = pipeline._execution_device
        #: the network that denoises (a UNet, a transformer)
        self.denoiser: Any = None
        self.latent_channels = 0
        self.native_size = 0

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    # -- configs, before any weights load ------------------------------------------

    @classmethod
    def folder_info(cls, folder: Path, location: str) -> dict[str, Any]:
        """``{"native_size", "vae_scale_factor", "latent_channels", "denoiser"}``
        of a local diffusers folder of this family, from its configs only
        (``denoiser``: the folder of the denoiser's config). Raises
        :class:`ModelError` naming the file and key that is wrong."""
        raise NotImplementedError

    # -- text ---------------------------------------------------------------

    @property
    def max_prompt_tokens(self) -> int:
        """Tokens the first text encoder sees (BOS/EOS included)."""
        return int(self.tokenizer.model_max_length)

    def _token_ids(self, prompt: str, truncate: bool = True) -> list[int]:
        """The first tokenizer's ids of ``prompt`` without BOS/EOS, truncated to its window."""
        kwargs = {"truncation": True, "max_length": self.max_prompt_tokens} if truncate else {}
        ids = self.tokenizer(prompt, **kwargs).input_ids
        special = set(getattr(self.tokenizer, "all_special_ids", ()) or ())
        ids = list(ids)
        if ids and getattr(self.tokenizer, "bos_token_id", None) is not None and ids[0] == self.tokenizer.bos_token_id:
            ids = ids[1:]
        if ids and ids[-1] in special:
            ids = ids[:-1]
        return ids

    def word_tokens(self, prompt: str) -> tuple[str, ...]:
        """The prompt's tokens without BOS/EOS, one decoded string per token
        (the release's "words": a word split into several tokens appears as
        its pieces, and a non-ASCII character split into byte-level pieces as
        U+FFFD characters). Tokens beyond the text encoder's window are
        dropped, as the model never sees them."""
        return tuple(self.tokenizer.decode([i]) for i in self._token_ids(prompt))

    def word_groups(self, prompt: str) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
        """The prompt's whole words and, for each, the positions of its tokens
        in :meth:`word_tokens` (:func:`accdiffusion.models.text.word_groups`:
        CLIP ``</w>`` marks, SentencePiece ``\u2581`` marks, else one word per token)."""
        return text.word_groups(self.tokenizer, self._token_ids(prompt))

    def dropped_text(self, prompt: str) -> str:
        """The end of ``prompt`` beyond the text encoder's window, decoded (empty when it fits)."""
        kept, full = self._token_ids(prompt), self._token_ids(prompt, truncate=False)
        return self.tokenizer.decode(full[len(kept):]).strip() if len(full) > len(kept) else ""

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

    def noise_schedule(self, scheduler: Any) -> DiscreteTimeNoise:
        """The run's noise schedule around the diffusers ``scheduler``
        (:func:`accdiffusion.models.noise.schedule_for` by default)."""
        return schedule_for(scheduler)

    def predict(self, latents: torch.Tensor, timestep: Any, cond: Conditioning, positions: Optional[torch.Tensor],
                target_size: tuple[int, int], **extra: Any) -> torch.Tensor:
        """The denoiser's raw output ``(N, C, h, w)`` float32 for schedule-scaled
        ``latents`` ``(N, C, h, w)``, one row of ``cond`` each.

        ``positions``: ``(N, 2)`` integer (top, left) of each view on the
        canvas in latent pixels, or ``None`` for views of the whole canvas;
        ``target_size``: the final image ``(height, width)`` in pixels.
        ``extra``: with structure guidance ``down_block_additional_residuals``
        and ``mid_block_additional_residual``; with ``guidance="embedded"``
        ``guidance``, an ``(N,)`` tensor of each row's guidance scale.
        """
        raise NotImplementedError

    # -- attention capture (phase 1) -------------------------------------------------

    def attention_capture(self, factor: int) -> Any:
        """A context manager recording the conditional branch's text attention
        during phase 1: it has ``recorder`` (an
        :class:`~accdiffusion.attention.AttentionRecorder`), ``grid(h, w)``
        (the map's size for an ``h x w`` latent) and ``latent_per_map``.
        ``factor``: the resolution the family reads maps at, where it has a choice."""
        raise ModelError(f"the {self.family} model family records no attention maps; choose a prompt decomposer "
                         "that does not need them (e.g. --prompt-decomposer identical)")

    # -- structure guidance ----------------------------------------------------------

    def load_controlnet(self, location: str) -> Any:
        """A ControlNet for this model from ``location``, checked to fit it."""
        raise ModelError(f"the {self.family} model family has no ControlNet support; allowed: "
                         "--structure-guidance none")

    def check_controlnet(self, controlnet: Any, location: str) -> None:
        """:class:`ModelError` naming ``location`` when ``controlnet`` does not fit this model."""
        raise ModelError(f"the {self.family} model family has no ControlNet support; allowed: "
                         "--structure-guidance none")

    def control_residuals(self, controlnet: Any, latents: torch.Tensor, timestep: Any, cond: Conditioning,
                          positions: Optional[torch.Tensor], target_size: tuple[int, int],
                          images: torch.Tensor, scale: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """A ControlNet's residuals for schedule-scaled ``latents`` with control
        ``images`` ``(N, 3, H, W)`` in ``[0, 1]``, scaled by ``scale``."""
        raise ModelError(f"the {self.family} model family has no ControlNet support")

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


def _class_names(value: Any) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ModelError(f"a model family's pipelines are diffusers pipeline class names, not {value!r}")
    return names


@attrs.frozen
class ModelFamily:
    """A model family: its adapter class and the diffusers pipeline classes it claims.

    ``name``: what records and messages call it (``sdxl``, ``sd``, ``flux``);
    ``adapter``: a :class:`ModelAdapter` subclass, built as ``adapter(pipeline)``;
    ``pipelines``: pipeline class names claimed, subclasses included (a
    folder's ``model_index.json`` ``_class_name`` is checked against them
    before any weights load); ``single_file``: the pipeline class that reads
    this family's single-file checkpoints (``None``: none); ``label``: the
    family's name in messages (``"SDXL"``).
    """

    name: str
    adapter: type
    pipelines: tuple[str, ...] = attrs.field(converter=_class_names)
    description: str = ""
    single_file: Optional[str] = None
    label: str = ""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ModelError(f"a model family's name is letters, digits, '_' and '-', not {self.name!r}")
        if not (isinstance(self.adapter, type) and issubclass(self.adapter, ModelAdapter)):
            raise ModelError(f"model family {self.name!r}: adapter must be a ModelAdapter subclass, "
                             f"not {self.adapter!r}")

    @property
    def title(self) -> str:
        return self.label or self.name

    def claims(self, pipeline: Any) -> bool:
        """Whether ``pipeline`` is (a subclass of) one of :attr:`pipelines`."""
        return any(cls.__name__ in self.pipelines for cls in type(pipeline).__mro__)

    def adapt(self, pipeline: Any) -> ModelAdapter:
        return self.adapter(pipeline)

    def inspect(self, folder: Path, location: str) -> dict[str, Any]:
        """The adapter's :meth:`ModelAdapter.folder_info` for a local folder."""
        return self.adapter.folder_info(folder, location)
