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
    its binarised cleaned mask (``masks``: ``(n_words, h, w)`` booleans).

    Masks with one row per token (a decomposer selecting per token) show the
    per-token maps (:meth:`AttentionMaps.per_token`) instead of the words'."""
    if (masks is not None and masks.shape[0] != len(attention.words) and attention.token_maps is not None
            and masks.shape[0] == len(attention.tokens)):
        attention = attention.per_token()
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


def patch_prompt_sheet(image: Image.Image, layout: WindowLayout, prompts: PatchPrompts, vae_scale_factor: float,
                       *, tile: int = 160) -> Image.Image:
    """Every window's part of ``image`` with its patch prompt under it, in
    window order (row-major for the default tiler), plus an overview with the
    windows outlined. ``vae_scale_factor``: image pixels per latent pixel of
    the layout's canvas."""
    f = vae_scale_factor
    windows = layout.on_canvas()
    columns = max(1, round(len(windows) ** 0.5))
    while columns * columns < len(windows) and len(windows) % columns:
        columns += 1
    rows = (len(windows) + columns - 1) // columns
    text_h = 46
    overview = image.convert("RGB").resize((tile * 2, max(1, round(image.height * tile * 2 / image.width))))
    width = max(columns * (tile + 6) + 6, overview.width + 12)
    sheet = Image.new("RGB", (width, overview.height + 16 + rows * (tile + text_h + 6) + 6), "white")
    draw = ImageDraw.Draw(sheet)
    sheet.paste(overview, (6, 6))
    o = overview.width / image.width
    for k, w in enumerate(windows):
        color = _PALETTE[k % len(_PALETTE)]
        draw.rectangle([6 + w.left * f * o, 6 + w.top * f * o, 6 + w.right * f * o - 1, 6 + w.bottom * f * o - 1],
                       outline=color, width=1)
    top0 = overview.height + 16
    for k, (w, prompt) in enumerate(zip(windows, prompts.prompts)):
        x = 6 + (k % columns) * (tile + 6)
        y = top0 + (k // columns) * (tile + text_h + 6)
        box = (max(0, round(w.left * f)), max(0, round(w.top * f)),
               min(image.width, round(w.right * f)), min(image.height, round(w.bottom * f)))
        crop = image.convert("RGB").crop(box)
        crop = crop.resize((tile, max(1, round(tile * crop.height / max(1, crop.width)))), Image.NEAREST)
        sheet.paste(crop, (x, y))
        draw.rectangle([x, y, x + tile - 1, y + crop.height - 1], outline=_PALETTE[k % len(_PALETTE)], width=2)
        lines = textwrap.wrap(f"{k}: {prompt or '(empty)'}", max(8, tile // 6))[:3]
        for i, line in enumerate(lines):
            draw.text((x, y + crop.height + 2 + 12 * i), line, fill="black", font=_font())
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
