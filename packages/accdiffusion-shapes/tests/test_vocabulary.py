"""Prompts outside the shapes world's vocabulary are refused by the evaluation and the repetition benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from accdiffusion_shapes import evaluate, repetition, world


def test_unknown_words_are_found_in_order_once() -> None:
    """Lower-cased words are looked up; punctuation counts as a word of its own."""
    assert world.unknown_words("a red circle on a white background") == []
    assert world.unknown_words("A Red CIRCLE") == []
    assert world.unknown_words("a purple circle, a purple cube") == ["purple", ",", "cube"]
    with pytest.raises(world.PromptError, match=r"negative prompt 'blurry photo': words 'blurry', 'photo' not in"):
        world.check_vocabulary("blurry photo", "negative prompt")


@pytest.mark.parametrize(
    ("text", "background", "objects"),
    [
        ("a red circle on a white background", "white", [("red", "circle", None)]),
        ("a small red circle and a large blue square on a black background", "black",
         [("red", "circle", "small"), ("blue", "square", "large")]),
        ("an empty gray background", "gray", []),
        ("a gray background", "gray", []),
        ("a yellow triangle", None, [("yellow", "triangle", None)]),
    ],
)
def test_prompts_in_the_caption_grammar_are_read(text: str, background, objects) -> None:
    """Background and named objects (colour, shape, size or None)."""
    parsed = world.parse_prompt(text)
    assert parsed == (background, tuple(world.PromptObject(*obj) for obj in objects))


@pytest.mark.parametrize("text", ["red circle on a white background", "a circle red", "a red circle on white background",
                                  "a white background and a red circle", "", "a red background"])
def test_prompts_outside_the_grammar_are_refused(text: str) -> None:
    """Vocabulary words in another order are refused too."""
    with pytest.raises(world.PromptError):
        world.parse_prompt(text)


def test_a_prompt_is_scored_against_its_objects_and_background() -> None:
    """A clean render of the prompt's scene is exact; a missing or extra object is not."""
    scene = world.Scene("black", (world.SceneObject("square", "blue", "large", 0.3, 0.3),))
    image = np.asarray(world.render(scene, supersample=2))
    score = evaluate.matches_prompt(image, *world.parse_prompt("a large blue square on a black background"))
    assert score == {"exact": True, "background": True, "objects": 1}
    assert not evaluate.matches_prompt(image, *world.parse_prompt("a small blue square"))["exact"]
    assert not evaluate.matches_prompt(image, *world.parse_prompt("a black background"))["exact"]
    assert not evaluate.matches_prompt(image, *world.parse_prompt("a blue square on a white background"))["background"]


def test_evaluate_refuses_an_unknown_word_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Exit code 2 and the word named; the (missing) model folder is never opened."""
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--model", str(tmp_path / "no-model"), "--prompt", "a red circle", "--prompt",
                       "a purple circle on a white background", "--json", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    assert "'purple'" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_repetition_refuses_an_unknown_word_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A negative prompt or a prompt outside the vocabulary: exit code 2, nothing written."""
    out = tmp_path / "rep"
    for extra in (["--negative-prompt", "blurry, ugly"], ["--prompt", "a red hexagon on a white background"]):
        with pytest.raises(SystemExit) as exit_info:
            repetition.main(["--model", str(tmp_path / "no-model"), "--out", str(out), *extra])
        assert exit_info.value.code == 2
        assert not out.exists()
    err = capsys.readouterr().err
    assert "'blurry', ',', 'ugly'" in err and "'hexagon'" in err


def test_repetition_reads_the_named_objects_of_its_prompts() -> None:
    """Own prompts give their named objects; the fixed set passes the check."""
    args = repetition.parse_args(["--out", "x", "--prompt", "a red circle and a red square on a white background",
                                  "--prompt", "an empty black background"])
    assert repetition.prompt_set(args) == (
        ("a red circle and a red square on a white background", {("red", "circle"): 1, ("red", "square"): 1}),
        ("an empty black background", {}),
    )
    assert repetition.prompt_set(repetition.parse_args(["--out", "x"])) == repetition.PROMPTS
