"""Patch prompts of a real run are made of whole words: no BPE pieces, no U+FFFD."""

import pytest

from accdiffusion import generate

#: "zebra" and "café" are split by the offline tokenizer; the emoji is four byte pieces.
PROMPT = "a zebra café 🐱 on grass"


@pytest.mark.parametrize("options, words", [
    ({}, ("a", "zebra", "café", "🐱", "on", "grass")),
    ({"cross_attention.per_token": "true"}, None),
])
def test_patch_prompts_are_whole_words(tiny_sd15_pipeline, options, words):
    result = generate(PROMPT, pipeline=tiny_sd15_pipeline, scale=2, steps=2, seed=3, plugin_options=options)
    attention = result.attention
    assert attention.words == ("a", "zebra", "café", "🐱", "on", "grass")
    assert len(attention.tokens) == 15 and attention.maps.shape[-1] == 6
    assert result.record["attention_words"] == list(attention.words)
    (phase,) = [p for p in result.phases if p.patch_prompts is not None]
    used = {w for ws in phase.patch_prompts.words for w in ws}
    assert used, "some window keeps a word"
    if words is not None:
        assert used <= set(words)
        assert not any("\ufffd" in p for p in phase.patch_prompts.prompts)
        for prompt, kept in zip(phase.patch_prompts.prompts, phase.patch_prompts.words):
            assert prompt == " ".join(kept)
    else:  # the release's per-token words: pieces of the split words and U+FFFD bytes
        assert used <= set(attention.tokens) and "zebra" not in used
        assert any("\ufffd" in p for p in phase.patch_prompts.prompts)
