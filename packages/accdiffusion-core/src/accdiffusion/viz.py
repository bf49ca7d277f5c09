"""Pictures of what a run did: attention maps and patch prompts."""

from __future__ import annotations

import textwrap
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from .types import AttentionMaps, PatchPrompts, WindowLayout

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def heatmap(values: torch.Tensor, size: int) -> Image.Image:
    """A 2-D tensor as a ``size``-px-wide heat map (normalised to its own range)."""
    v = values.float()
    v = (v - v.min()) / (v.max() - v.min()).clamp(min=1e-12)
    r = (255 * v.clamp(0, 1)).round().to(torch.uint8)
    g = (255 * (1 - (2 * v - 1).abs())).round().to(torch.uint8)
    b = (255 * (1 - v)).round().to(torch.uint8)
    img = Image.fromarray(torch.stack([r, g, b], dim=-1).numpy(), "RGB")
    h = max(1, round(size * values.shape[0] / values.shape[1]))
    return img.resize((size, h), Image.NEAREST)


def attention_sheet(attention: AttentionMaps, masks: Optional[torch.Tensor] = None, tile: int = 128) -> Image.Image:
    """One column per word: its averaged cross-attention map and, when given,
    its binarised cleaned mask (``masks``: ``(n_words, h, w)`` booleans)."""
    n = max(1, len(attention.words))
    rows = 2 if masks is not None else 1
    h_a, w_a = attention.maps.shape[:2]
    th = max(1, round(tile * h_a / w_a))
    sheet = Image.new("RGB", (n * (tile + 4) + 4, rows * (th + 4) + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for j, word in enumerate(attention.words):
        x = 4 + j * (tile + 4)
        draw.text((x, 4), word[:18], fill="black", font=_font())
        sheet.paste(heatmap(attention.maps[..., j], tile), (x, 20))
        if masks is not None:
            m = (masks[j].to(torch.uint8) * 255).numpy()
            sheet.paste(Image.fromarray(m, "L").convert("RGB").resize((tile, th), Image.NEAREST), (x, 24 + th))
    return sheet


def patch_prompt_sheet(image: Image.Image, layout: WindowLayout, prompts: PatchPrompts, vae_scale_factor: int,
                       *, width: int = 768) -> Image.Image:
    """The image with every window outlined and numbered, and the list of patch prompts beside it."""
    scale = width / image.width
    base = image.convert("RGB").resize((width, max(1, round(image.height * scale))), Image.BICUBIC)
    draw = ImageDraw.Draw(base)
    f = vae_scale_factor * scale
    for k, w in enumerate(layout.on_canvas()):
        color = _PALETTE[k % len(_PALETTE)]
        box = [w.left * f, w.top * f, w.right * f - 1, w.bottom * f - 1]
        draw.rectangle(box, outline=color, width=2)
        draw.text((box[0] + 3 + 2 * (k % 3), box[1] + 3 + 10 * (k % 2)), str(k), fill=color, font=_font())
    lines: list[str] = []
    for k, p in enumerate(prompts.prompts):
        lines.extend(textwrap.wrap(f"{k}: {p or '(empty)'}", 60) or [f"{k}:"])
    text_w = 380
    sheet = Image.new("RGB", (base.width + text_w, max(base.height, 14 * len(lines) + 8)), "white")
    sheet.paste(base, (0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(lines):
        draw.text((base.width + 6, 4 + 14 * i), line, fill="black", font=_font())
    return sheet


def grid(images: Sequence[Image.Image], labels: Sequence[str], *, columns: int, tile: int = 256) -> Image.Image:
    """Images in a labelled grid (each resized to ``tile`` px wide)."""
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (tile + 4) + 4, rows * (tile + 22) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, label) in enumerate(zip(images, labels)):
        x, y = 4 + (i % columns) * (tile + 4), 4 + (i // columns) * (tile + 22)
        draw.text((x, y), label[:40], fill="black", font=_font())
        sheet.paste(im.convert("RGB").resize((tile, max(1, round(tile * im.height / im.width)))), (x, y + 16))
    return sheet
