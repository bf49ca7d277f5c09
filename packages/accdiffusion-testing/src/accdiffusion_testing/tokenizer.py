"""A tiny CLIP byte-level BPE tokenizer built offline.

The vocabulary holds the 256 byte-level symbols used by GPT-2 / CLIP (each also
with the ``</w>`` end-of-word suffix), the two CLIP special tokens and one token
per listed word.  The merges are chosen so that every listed word encodes to a
single ``word</w>`` token while any other word falls back to smaller pieces
(single characters when it shares no merged prefix with a listed word).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers import CLIPTokenizer

__all__ = [
    "BOS_TOKEN",
    "DEFAULT_WORDS",
    "END_OF_WORD",
    "EOS_TOKEN",
    "MODEL_MAX_LENGTH",
    "build_clip_vocab_and_merges",
    "bytes_to_unicode",
    "write_clip_tokenizer",
]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MODEL_MAX_LENGTH = 77

_WORD_PATTERN = re.compile(r"[a-z]+")

DEFAULT_WORDS: tuple[str, ...] = (
    # articles, conjunctions, prepositions, pronouns
    "a", "an", "the", "and", "or", "but", "not", "no", "on", "of", "with", "without",
    "in", "at", "by", "for", "from", "to", "into", "onto", "over", "under", "above",
    "below", "behind", "near", "next", "between", "through", "across", "around",
    "inside", "outside", "top", "bottom", "left", "right", "center", "middle",
    "is", "are", "it", "its", "this", "that", "his", "her", "their", "very", "many",
    "some", "two", "three", "four", "one", "single", "pair", "group",
    # colours and tones
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black",
    "white", "gray", "grey", "gold", "golden", "silver", "cyan", "magenta",
    "teal", "violet", "beige", "dark", "light", "bright", "pale", "colorful",
    "monochrome", "pastel", "neon", "vivid",
    # shapes and patterns
    "circle", "square", "triangle", "star", "rectangle", "hexagon", "oval",
    "diamond", "heart", "cross", "line", "lines", "dot", "dots", "stripe",
    "stripes", "striped", "checkerboard", "grid", "spiral", "wave", "waves",
    "cube", "sphere", "cone", "cylinder", "pyramid", "ring", "shape", "shapes",
    "pattern", "gradient", "border", "frame",
    # sizes and amounts
    "small", "large", "big", "tiny", "huge", "giant", "little", "tall", "short",
    "long", "wide", "narrow", "thin", "thick", "round", "flat", "full", "empty",
    # scenes, places, nature
    "background", "foreground", "landscape", "sky", "cloud", "clouds", "sun",
    "moon", "stars", "night", "day", "sunset", "sunrise", "morning", "evening",
    "mountain", "mountains", "hill", "valley", "river", "lake", "sea", "ocean",
    "beach", "island", "forest", "tree", "trees", "flower", "flowers", "grass",
    "field", "garden", "desert", "snow", "rain", "fog", "water", "fire", "ice",
    "rock", "stone", "sand", "road", "street", "city", "town", "village",
    "castle", "house", "building", "tower", "bridge", "room", "window", "door",
    "wall", "floor", "table", "chair", "space", "planet", "earth", "galaxy",
    # creatures and people
    "cat", "dog", "horse", "bird", "fish", "lion", "tiger", "bear", "fox",
    "wolf", "rabbit", "owl", "eagle", "dragon", "cow", "sheep", "elephant",
    "butterfly", "animal", "animals", "person", "people", "man", "woman", "boy",
    "girl", "child", "face", "portrait", "astronaut", "knight", "robot",
    "riding", "sitting", "standing", "running", "flying", "walking", "holding",
    "wearing",
    # things
    "car", "boat", "ship", "train", "plane", "bicycle", "ball", "box", "cup",
    "book", "hat", "lamp", "clock", "apple", "banana", "fruit", "cake", "bread",
    # styles and media
    "photo", "photograph", "painting", "drawing", "illustration", "sketch",
    "render", "art", "artwork", "digital", "oil", "watercolor", "cartoon",
    "anime", "realistic", "photorealistic", "cinematic", "style", "detailed",
    "highly", "sharp", "focus", "lighting", "soft", "hard", "studio", "natural",
    "beautiful", "masterpiece", "quality", "high", "best", "resolution",
    "closeup", "close", "view", "angle", "scene", "simple", "plain",
    "abstract", "minimal", "old", "new", "ancient", "modern", "fantasy",
    "epic", "dramatic", "cozy", "lush", "shiny", "smooth", "rough", "clean",
    # negative prompt vocabulary
    "blurry", "blur", "ugly", "duplicate", "poorly", "drawn", "deformed",
    "mosaic", "bad", "worst", "low", "lowres", "jpeg", "artifacts", "noise",
    "noisy", "cropped", "watermark", "text", "signature", "extra", "missing",
    "limbs", "fingers", "hands", "mutated", "disfigured", "distorted",
    "grainy", "overexposed", "underexposed", "repetitive", "tiled", "tiling",
)


def bytes_to_unicode() -> dict[int, str]:
    """Return GPT-2's reversible mapping from the 256 byte values to printable unicode symbols."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes)}


def _normalise_words(words: Iterable[str]) -> list[str]:
    """Lower-case and de-duplicate ``words`` (first occurrence wins), rejecting non-letter words."""
    seen: dict[str, None] = {}
    for word in words:
        lowered = word.lower()
        if not _WORD_PATTERN.fullmatch(lowered):
            raise ValueError(f"tokenizer words must consist of ASCII letters only, got {word!r}")
        seen.setdefault(lowered, None)
    return list(seen)


def _bpe(symbols: Sequence[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges to ``symbols`` the way the ``tokenizers`` library does (lowest rank, leftmost first)."""
    pieces = list(symbols)
    while len(pieces) > 1:
        candidates = [
            (ranks[pair], index)
            for index, pair in enumerate(zip(pieces, pieces[1:]))
            if pair in ranks
        ]
        if not candidates:
            break
        _, index = min(candidates)
        pieces[index : index + 2] = [pieces[index] + pieces[index + 1]]
    return pieces


def build_clip_vocab_and_merges(
    words: Iterable[str] = DEFAULT_WORDS,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Build a CLIP BPE vocabulary and merge list in which each of ``words`` is a single token.

    The vocabulary is laid out like CLIP's: the 256 byte symbols, the same symbols
    with ``</w>``, every merged token in merge order, then ``<|startoftext|>`` and
    ``<|endoftext|>``.  Words are processed in order; for each one the current
    merges are applied and, while more than one piece remains, a merge of the
    first two pieces is appended.  Appended merges rank below all existing ones,
    so words that already encode to one token are unaffected and no merge is
    ever added twice.

    Args:
        words: Words made of ASCII letters; matching is case-insensitive.

    Returns:
        The ``token -> id`` vocabulary and the ordered list of merge pairs.
    """
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [symbol + END_OF_WORD for symbol in byte_symbols]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in _normalise_words(words):
        pieces = _bpe([*word[:-1], word[-1] + END_OF_WORD], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            merged = pair[0] + pair[1]
            if merged not in known:
                known.add(merged)
                tokens.append(merged)
            pieces = _bpe(pieces, ranks)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: str | Path, words: Iterable[str] = DEFAULT_WORDS) -> Path:
    """Write a CLIP tokenizer loadable with ``transformers.CLIPTokenizer.from_pretrained(folder)``.

    The folder receives ``vocab.json`` and ``merges.txt`` (the classic CLIP files)
    together with ``tokenizer.json``, ``tokenizer_config.json`` and
    ``special_tokens_map.json`` so that current and older ``transformers``
    releases load it without network access.  The tokenizer pads with
    ``<|endoftext|>`` and has ``model_max_length`` 77.

    Args:
        folder: Target directory, created if missing.
        words: Words that must each encode to exactly one token.

    Returns:
        The folder as a :class:`~pathlib.Path`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_clip_vocab_and_merges(words)
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=MODEL_MAX_LENGTH,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )
    tokenizer.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges)
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    special_tokens = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens, indent=2), encoding="utf-8")
    return folder
