"""A prompt's tokens and whole words, from the family's first tokenizer.

The attention maps of phase 1 are per token; the patch prompts are built from
whole words. :func:`word_groups` groups tokens into words for the two
tokenizer kinds in use: CLIP's byte-level BPE (a word ends with a token whose
vocabulary entry ends in ``</w>``) and SentencePiece (T5: a word starts with a
token beginning with ``\u2581``). Any other tokenizer gives one word per token.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Sequence

#: CLIP's BPE vocabulary marks the last token of a word with this suffix.
END_OF_WORD = "</w>"
#: SentencePiece marks the first token of a word with this prefix.
START_OF_WORD = "\u2581"


def _clean(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cc").strip()


def group_pieces(pieces: Sequence[str]) -> list[tuple[int, ...]]:
    """Token positions of each word from the tokens' vocabulary entries:
    CLIP ``</w>`` ends a word (a last run without it was cut by the text
    window and is dropped); SentencePiece ``\u2581`` starts one; otherwise one
    word per token."""
    if any(p.endswith(END_OF_WORD) for p in pieces):
        groups, current = [], []
        for k, piece in enumerate(pieces):
            current.append(k)
            if piece.endswith(END_OF_WORD):
                groups.append(tuple(current))
                current = []
        return groups
    if any(p.startswith(START_OF_WORD) for p in pieces):
        groups = []
        for k, piece in enumerate(pieces):
            if piece.startswith(START_OF_WORD) or not groups:
                groups.append((k,))
            else:
                groups[-1] = groups[-1] + (k,)
        return groups
    return [(k,) for k in range(len(pieces))]


def word_groups(tokenizer: Any, ids: Sequence[int]) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """The whole words of the token ``ids`` (without BOS/EOS) and the
    positions of each word's tokens. Each word is decoded from its whole group
    of ids (a split word or a multi-byte character comes out whole); control
    characters are removed and a word left empty is dropped. A tokenizer
    without ``convert_ids_to_tokens`` gives one word per token."""
    ids = list(ids)
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if convert is None:
        return tuple(tokenizer.decode([i]) for i in ids), tuple((k,) for k in range(len(ids)))
    pieces = [str(p) for p in convert(ids)]
    if not any(p.endswith(END_OF_WORD) or p.startswith(START_OF_WORD) for p in pieces):
        return tuple(tokenizer.decode([i]) for i in ids), tuple((k,) for k in range(len(ids)))
    words: list[str] = []
    groups: list[tuple[int, ...]] = []
    for group in group_pieces(pieces):
        text = _clean(tokenizer.decode([ids[j] for j in group]))
        if text:
            words.append(text)
            groups.append(group)
    return tuple(words), tuple(groups)
