"""Whole words for patch prompts: token grouping, per-word maps, the extracted maps."""

import pytest
import torch

from accdiffusion import AttentionMaps
from accdiffusion.adapters import SDAdapter, SDXLAdapter
from accdiffusion.attention import AttentionRecorder, extract_maps, word_maps
from accdiffusion.viz import attention_sheet

#: A split word, an accent, an emoji, a hyphen, CJK, punctuation, a contraction,
#: a tab, a control character and a ZWJ emoji sequence, on the offline tokenizer.
PROMPT = "a zebra café 🐱 on red-haired 日本, cat's\ttab\x07bell 👨\u200d👩\u200d👧"


@pytest.fixture(params=["sdxl", "sd15"])
def adapter(request, tiny_sdxl_pipeline, tiny_sd15_pipeline):
    return SDXLAdapter(tiny_sdxl_pipeline) if request.param == "sdxl" else SDAdapter(tiny_sd15_pipeline)


def test_tokens_are_the_release_pieces(adapter):
    tokens = adapter.word_tokens(PROMPT)
    assert tokens[:7] == ("a", "z", "e", "br", "a", "ca", "f")
    assert tokens[7:13] == ("\ufffd",) * 6  # é's second byte, then 🐱's four bytes, one piece each
    assert "\x07" in tokens and len(tokens) == 53


def test_words_group_tokens_up_to_the_end_of_word_mark(adapter):
    words, groups = adapter.word_groups(PROMPT)
    assert words == ("a", "zebra", "café", "🐱", "on", "red", "-", "haired", "日本", ",", "cat", "'s", "tab",
                     "bell", "👨\u200d👩\u200d👧")
    assert groups[:4] == ((0,), (1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12))
    assert groups[7:9] == ((16, 17, 18, 19), (20, 21, 22, 23, 24, 25))
    # the bell character (token 32) is its own word, empty once control characters go: dropped
    assert groups[12:14] == ((30, 31), (33, 34))
    assert groups[14] == tuple(range(35, 53))
    assert not any("\ufffd" in w or "\x07" in w for w in words)


def test_a_word_cut_by_the_window_is_dropped(adapter):
    # "zebra" is 4 tokens: 75 tokens fit, 18 whole words and 3 pieces of the 19th
    words, groups = adapter.word_groups("zebra " * 40)
    assert words == ("zebra",) * 18 and groups[-1] == (68, 69, 70, 71)
    assert len(adapter.word_tokens("zebra " * 40)) == 75


def test_empty_prompt_has_no_words(adapter):
    assert adapter.word_groups("") == ((), ())


def test_word_map_is_the_mean_of_its_tokens_maps():
    token_maps = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    maps = word_maps(token_maps, ((0,), (1, 2, 3)))
    assert maps.shape == (2, 3, 2)
    assert torch.equal(maps[..., 0], token_maps[..., 0])
    # token k's value at (i, j) is 12 i + 4 j + k: the mean of k = 1, 2, 3 is 12 i + 4 j + 2
    assert torch.equal(maps[..., 1], token_maps[..., 2])
    assert word_maps(token_maps, ()).shape == (2, 3, 0)


def test_extract_maps_gives_words_and_keeps_tokens(adapter):
    prompt = "a zebra on grass"  # tokens: a, z, e, br, a, on, grass
    recorder = AttentionRecorder()
    total = torch.zeros(4 * 6, 77)
    for k in range(77):
        total[:, k] = torch.arange(24, dtype=torch.float32) * (k + 1)  # token k's map: (k + 1) * cell index
    recorder.total, recorder.count = total * 2, 2
    attention = extract_maps(recorder, adapter, prompt, 16, 24, 4)
    assert attention.words == ("a", "zebra", "on", "grass")
    assert attention.tokens == ("a", "z", "e", "br", "a", "on", "grass")
    assert attention.groups == ((0,), (1, 2, 3, 4), (5,), (6,))
    cells = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    assert attention.token_maps.shape == (4, 6, 7)
    assert torch.equal(attention.token_maps[..., 3], cells * 5)  # prompt token 3 is text position 4
    assert torch.equal(attention.maps[..., 1], cells * 4.5)  # text positions 2..5: factors 3, 4, 5, 6
    assert torch.equal(attention.maps[..., 3], cells * 8)
    per_token = attention.per_token()
    assert per_token.words == attention.tokens and per_token.maps is attention.token_maps
    assert per_token.groups == tuple((k,) for k in range(7))


def test_hand_built_maps_have_no_tokens():
    maps = AttentionMaps(torch.zeros(2, 2, 1), ("cat",), 4)
    assert maps.token_maps is None and maps.tokens == () and maps.per_token() is maps


def test_attention_sheet_with_per_token_masks(adapter):
    attention = extract_maps(_flat_recorder(), adapter, "a zebra", 16, 24, 4)
    words = attention_sheet(attention, torch.zeros(2, 4, 6, dtype=torch.bool), tile=32)
    tokens = attention_sheet(attention, torch.zeros(5, 4, 6, dtype=torch.bool), tile=32)
    assert words.width == 2 * 36 + 4 and tokens.width == 5 * 36 + 4


def _flat_recorder():
    recorder = AttentionRecorder()
    recorder.total, recorder.count = torch.rand(24, 77, generator=torch.Generator().manual_seed(0)), 1
    return recorder
