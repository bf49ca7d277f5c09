"""The command lines written before the stages owned their options keep working.

Each old spelling (``--c``, ``--sigma``, ``--no-jitter``, ``--controlnet``,
``--option sam_points=2``, ...) must reach the same option of the selected
plugin as its new spelling (``--cross-attention-threshold``, ...), which is
checked on the built stage objects, and one old command line runs end to end
with the record showing the values.
"""

from __future__ import annotations

import json

import attrs
import pytest

from accdiffusion import Settings, cli
from accdiffusion.api import selected_stages
from accdiffusion.plugins import PluginHost

HOST = PluginHost()


def stages_of(argv: list[str]) -> dict[str, object]:
    """The stage objects the command line ``generate "x" *argv`` would run with."""
    args = cli.build_parser(HOST).parse_args(["generate", "x", *argv])
    names = {f.name for f in attrs.fields(Settings)} - {"prompt", "plugin_options"}
    fields = {name: value for name, value in vars(args).items() if name in names}
    settings = Settings(prompt="x", plugin_options=cli._plugin_options(args), **fields)
    chosen = selected_stages(settings, {})
    HOST.check_options(settings, chosen)
    return {stage: HOST.create(stage, name, settings) for stage, name in chosen.items()}


@pytest.mark.parametrize("old, new, stage, expected", [
    (["--c", "0.45"], ["--cross-attention-threshold", "0.45"], "prompt_decomposer", {"threshold": 0.45}),
    (["--option", "c=0.45"], ["--option", "cross_attention.threshold=0.45"], "prompt_decomposer", {"threshold": 0.45}),
    (["--option", "cross_attention.border=clipped"], ["--cross-attention-border", "clipped"], "prompt_decomposer",
     {"border": "clipped"}),
    (["--option", "cross_attention.per_token=true"], ["--cross-attention-per-token"], "prompt_decomposer",
     {"per_token": True}),
    (["--sigma", "0.5"], ["--window-interaction-sigma", "0.5"], "global_guidance", {"sigma": 0.5}),
    (["--cosine-scale-3", "2"], ["--window-interaction-cosine-scale-3", "2"], "global_guidance",
     {"cosine_scale_3": 2.0}),
    (["--no-gaussian-smoothing"], ["--no-window-interaction-gaussian-smoothing"], "global_guidance",
     {"gaussian_smoothing": False}),
    (["--global-guidance", "dilated", "--sigma", "0.4"], ["--global-guidance", "dilated", "--dilated-sigma", "0.4"],
     "global_guidance", {"sigma": 0.4}),
    (["--no-jitter"], ["--no-sliding-window-jitter"], "tiler", {"jitter": False}),
    (["--schedule", "fast", "--option", "fast.start_fraction=0.6"], ["--schedule", "fast", "--fast-start-fraction", "0.6"],
     "schedule", {"start_fraction": 0.6}),
    (["--schedule", "fast", "--option", "fast.skip_residual=false"], ["--schedule", "fast", "--no-fast-skip-residual"],
     "schedule", {"skip_residual": False}),
    (["--structure-guidance", "controlnet", "--controlnet", "some/controlnet", "--controlnet-scale", "0.3",
      "--canny-sigma", "0.2", "--controlnet-start", "0.1", "--controlnet-end", "0.9"],
     ["--structure-guidance", "controlnet", "--controlnet-model", "some/controlnet", "--controlnet-scale", "0.3",
      "--controlnet-canny-sigma", "0.2", "--controlnet-start", "0.1", "--controlnet-end", "0.9"],
     "structure_guidance", {"model": "some/controlnet", "scale": 0.3, "canny_sigma": 0.2, "start": 0.1, "end": 0.9}),
])
def test_old_and_new_spellings_set_the_same_option(old, new, stage, expected):
    before, after = stages_of(old)[stage], stages_of(new)[stage]
    assert before == after
    for field, value in expected.items():
        assert getattr(before, field) == value


def test_old_sam_options_reach_the_sam_options():
    pytest.importorskip("accdiffusion_sam")
    old = stages_of(["--prompt-decomposer", "sam", "--c", "0.4", "--option", "sam_model=some/sam",
                     "--option", "sam_points=2"])["prompt_decomposer"]
    new = stages_of(["--prompt-decomposer", "sam", "--sam-threshold", "0.4", "--sam-model", "some/sam",
                     "--sam-points-per-word", "2"])["prompt_decomposer"]
    assert old.options == new.options
    assert (old.options.model, old.options.threshold, old.options.points_per_word) == ("some/sam", 0.4, 2)


def test_defaults_are_unchanged_without_options():
    objs = stages_of([])
    assert objs["prompt_decomposer"].threshold == 0.3 and objs["prompt_decomposer"].border == "window"
    assert (objs["global_guidance"].sigma, objs["global_guidance"].cosine_scale_3) == (0.8, 1.0)
    assert objs["tiler"].jitter is True


def test_an_old_command_line_runs_and_records_its_options(tiny_sd15_path, tmp_path, capsys):
    code = cli.main(["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "2", "--seed", "3", "-q",
                     "--c", "0.4", "--sigma", "0.6", "--no-jitter", "--cosine-scale-3", "2",
                     "--option", "cross_attention.border=clipped", "--output", str(tmp_path), "--name", "old"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "old" / "record.json").read_text())
    assert record["stages"]["prompt_decomposer"] == {
        "name": "cross_attention", "options": {"threshold": 0.4, "border": "clipped", "per_token": False}}
    assert record["stages"]["global_guidance"]["options"] == {"sigma": 0.6, "cosine_scale_3": 2.0,
                                                              "gaussian_smoothing": True}
    assert record["stages"]["tiler"] == {"name": "sliding_window", "options": {"jitter": False}}
    assert record["settings"]["plugin_options"] == {"c": "0.4", "sigma": "0.6", "jitter": False,
                                                    "cosine_scale_3": "2", "cross_attention.border": "clipped"}
