"""Segment Anything (transformers ``SamModel``) as a point-prompted segmenter.

The image encoder is the expensive part of SAM; :class:`SamSegmenter` runs it
once per image and keeps the embedding, so every further call with the same
image runs only the prompt encoder and the mask decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from accdiffusion import ModelError
from accdiffusion.loading import resolve_device
from PIL import Image

#: The SAM checkpoint used when none is named.
DEFAULT_MODEL = "facebook/sam-vit-base"

#: A point prompt ``(x, y)`` in pixels of the image being segmented.
Point = tuple[float, float]


class Segmenter(Protocol):
    """Anything that segments an image from point prompts, one mask per group of points."""

    def __call__(self, image: Image.Image, points: Sequence[Sequence[Point]]) -> torch.Tensor:
        """Bool masks ``(len(points), image.height, image.width)``: mask ``i`` is
        the object marked by the foreground points ``points[i]``."""
        ...


def _image_size(model: Any) -> int:
    """The square input side of a ``SamModel``'s vision encoder."""
    size = model.config.vision_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


class SamSegmenter:
    """Segment Anything with point prompts: the best of SAM's three masks per group of points.

    ``model``: a hub id or local folder, loaded with ``from_pretrained`` on
    first use, or a built ``transformers.SamModel``, which then needs its
    ``processor`` (a ``transformers.SamProcessor``). ``device``: where SAM
    runs; ``"auto"`` is CUDA when available (then Apple's MPS), else the CPU.
    SAM runs in the model's dtype (float32 when loaded here).
    """

    def __init__(self, model: str | torch.nn.Module = DEFAULT_MODEL, processor: Any = None, *,
                 device: str = "auto") -> None:
        self.device = resolve_device(device)
        self._model: torch.nn.Module | None = None
        self._processor: Any = None
        self._image: Image.Image | None = None
        self._embedded: tuple[torch.Tensor, tuple[int, int], tuple[int, int]] | None = None
        if isinstance(model, str):
            if processor is not None:
                raise ValueError("a processor goes with a built SamModel, not with a model location")
            self.model_id = model
        else:
            if processor is None:
                raise ValueError("a built SamModel needs its processor (a transformers.SamProcessor)")
            self.model_id = str(getattr(model, "name_or_path", "") or type(model).__name__)
            self._model, self._processor = self._prepare(model, processor)

    def __repr__(self) -> str:
        return f"SamSegmenter({self.model_id!r}, device={self.device!r})"

    def _prepare(self, model: torch.nn.Module, processor: Any) -> tuple[torch.nn.Module, Any]:
        """Check that model and processor agree on the input size; move the model to the device."""
        side = int(processor.image_processor.size["longest_edge"])
        if side != _image_size(model):
            raise ValueError(
                f"the SAM processor resizes images to {side} px but the model {self.model_id!r} "
                f"expects {_image_size(model)} px"
            )
        return model.to(self.device).eval(), processor

    def _components(self) -> tuple[torch.nn.Module, Any]:
        """The model and processor, loaded on the first call when given as a location."""
        if self._model is None:
            from transformers import SamModel, SamProcessor

            try:
                model = SamModel.from_pretrained(self.model_id).float()
                processor = SamProcessor.from_pretrained(self.model_id)
            except (OSError, ValueError) as exc:
                raise ModelError(
                    f"cannot load the SAM model {self.model_id!r}: its weights must be available in a local "
                    f"folder or from the Hugging Face hub ({exc})"
                ) from exc
            self._model, self._processor = self._prepare(model, processor)
        return self._model, self._processor

    def _embed(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """SAM's image embedding of ``image`` with its original and resized ``(height, width)``;
        computed on the first call for an image object and reused while the image stays the same."""
        if self._embedded is None or self._image is not image:
            model, processor = self._components()
            inputs = processor(images=image, return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.device, model.dtype)
            embeddings = model.get_image_embeddings(pixels)
            original = tuple(int(v) for v in inputs["original_sizes"][0])
            reshaped = tuple(int(v) for v in inputs["reshaped_input_sizes"][0])
            self._image, self._embedded = image, (embeddings, original, reshaped)
        return self._embedded

    def __call__(self, image: Image.Image, points: Sequence[Sequence[Point]]) -> torch.Tensor:
        """Bool masks ``(len(points), image.height, image.width)`` on the CPU.

        For each group of foreground points (image pixels, ``(x, y)``), SAM's
        prompt decoder predicts three masks; the one with the highest
        predicted IoU is kept. The image embedding is computed once per image.
        """
        if any(not group for group in points):
            raise ValueError("every group of points needs at least one point")
        embeddings, original, reshaped = self._embed(image)
        model, processor = self._components()
        # the processor's point normalisation: scale to the resized (unpadded) input
        sy, sx = reshaped[0] / original[0], reshaped[1] / original[1]
        masks = []
        with torch.no_grad():
            for group in points:
                coords = torch.tensor([[[(x * sx, y * sy) for x, y in group]]], dtype=model.dtype, device=self.device)
                labels = torch.ones(coords.shape[:3], dtype=torch.long, device=self.device)
                out = model(image_embeddings=embeddings, input_points=coords, input_labels=labels,
                            multimask_output=True)
                best = int(out.iou_scores[0, 0].argmax())
                full = processor.post_process_masks(out.pred_masks.float().cpu(), [original], [reshaped])[0]
                masks.append(full[0, best])
        return torch.stack(masks).bool()
