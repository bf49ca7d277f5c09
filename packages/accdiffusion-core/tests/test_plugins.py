"""The plugin host: fresh per use, registration through hooks, selection by name."""

import types

import pytest
import torch

from accdiffusion import PluginError, PluginHost, Settings, hookimpl
from accdiffusion.plugins import ALLOW_ENV
from accdiffusion.types import PatchPrompts


class ReversedWords:
    """A test decomposer: every window gets the prompt's words reversed."""

    needs_attention = False
    fixed_windows = False

    def decompose(self, request):
        return PatchPrompts(tuple(" ".join(reversed(request.prompt.split())) for _ in request.layout.windows))

    def word_masks(self, attention):
        return None


class TestPlugin:
    @hookimpl
    def accdiffusion_register_prompt_decomposers(self, register):
        register("reversed", lambda settings: ReversedWords(), description="words reversed")

    @hookimpl
    def accdiffusion_register_models(self, register):
        register("test-model", "/nowhere/model", description="a test model")


def test_test_plugin_registers_through_the_hook_path():
    host = PluginHost([TestPlugin()], entry_points=False)
    assert host.registry.names("prompt_decomposer") == ["reversed"]
    obj = host.create("prompt_decomposer", "reversed", Settings(prompt="x"))
    assert isinstance(obj, ReversedWords)
    assert host.model_location("test-model") == "/nowhere/model"


def test_hosts_share_no_state():
    a = PluginHost([TestPlugin()], entry_points=False)
    b = PluginHost(entry_points=False)
    assert "reversed" in a.registry.names("prompt_decomposer")
    assert b.registry.names("prompt_decomposer") == []


def test_unknown_name_lists_installed():
    host = PluginHost([TestPlugin()], entry_points=False)
    with pytest.raises(PluginError, match=r"unknown prompt_decomposer 'sam'; installed: reversed"):
        host.create("prompt_decomposer", "sam", Settings(prompt="x"))


def test_installed_defaults_are_found_through_entry_points():
    host = PluginHost()
    assert "cross_attention" in host.registry.names("prompt_decomposer")
    assert "identical" in host.registry.names("prompt_decomposer")
    assert "sliding_window" in host.registry.names("tiler")
    assert {"window_interaction", "dilated", "none"} <= set(host.registry.names("global_guidance"))
    assert "bicubic_latent" in host.registry.names("upscaler")


def test_allow_list_env_var_limits_loaded_plugins(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "tiling")
    host = PluginHost()
    assert host.registry.names("tiler") == ["sliding_window"]
    assert host.registry.names("prompt_decomposer") == []


def test_stage_objects_are_checked_against_the_protocol():
    host = PluginHost(entry_points=False)
    assert isinstance(host.create("prompt_decomposer", ReversedWords(), None), ReversedWords)
    with pytest.raises(PluginError, match="does not implement Tiler"):
        host.create("tiler", object(), None)
    assert host.create("global_guidance", "none", None) is None


def test_duplicate_and_reserved_names_are_rejected():
    class Twice:
        @hookimpl
        def accdiffusion_register_tilers(self, register):
            register("grid", lambda s: None)
            register("grid", lambda s: None)

    with pytest.raises(PluginError, match="registered twice"):
        PluginHost([Twice()], entry_points=False)

    class Reserved:
        @hookimpl
        def accdiffusion_register_global_guidances(self, register):
            register("none", lambda s: None)

    with pytest.raises(PluginError, match="reserved"):
        PluginHost([Reserved()], entry_points=False)


def test_misspelt_hook_is_caught():
    class Misspelt:
        @hookimpl
        def accdiffusion_register_tiler(self, register):  # missing "s"
            pass

    with pytest.raises(Exception, match="accdiffusion_register_tiler"):
        PluginHost([Misspelt()], entry_points=False)


def test_adapter_hook_first_result_wins_and_unknown_pipeline_is_refused():
    sentinel = object()

    class Claims:
        @hookimpl
        def accdiffusion_adapt_pipeline(self, pipeline, settings):
            return sentinel if isinstance(pipeline, types.SimpleNamespace) else None

    host = PluginHost([Claims()], entry_points=False)
    assert host.adapt(types.SimpleNamespace(), None) is sentinel
    with pytest.raises(PluginError, match="no model family handles a Tensor; registered families: "
                                          "sdxl: StableDiffusionXLPipeline; sd: StableDiffusionPipeline; flux: FluxPipeline; "
                                          "sd3: StableDiffusion3Pipeline"):
        host.adapt(torch.zeros(1), None)


def _installed(folder, dist, module, source):
    """A distribution 'installed' in ``folder`` (a dist-info with an ``accdiffusion``
    entry point, and its module), as pip would leave it."""
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[accdiffusion]\n{module} = {module}:plugin\n")


def test_two_distributions_registering_one_name_are_both_named(tmp_path, monkeypatch, capsys):
    source = ("import attrs\nfrom accdiffusion import StageEntry, StagePlugin\n"
              "from accdiffusion_tiling import SlidingWindowTiler\n"
              "plugin = StagePlugin([StageEntry('tiler', 'grid', SlidingWindowTiler, 'a grid')])\n")
    _installed(tmp_path, "first-grid", "first_grid", source)
    _installed(tmp_path, "second-grid", "second_grid", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ACCDIFFUSION_PLUGINS", "first_grid,second_grid,tiling")
    expected = ("tiler 'grid' is registered twice: by plugin 'first_grid' (distribution 'first-grid') and by "
                "plugin 'second_grid' (distribution 'second-grid'); uninstall one of the two distributions")
    with pytest.raises(PluginError) as err:
        PluginHost()
    assert str(err.value) == expected
    monkeypatch.delenv("ACCDIFFUSION_PLUGINS")
    with pytest.raises(PluginError, match="registered twice: by plugin '(first|second)_grid' "
                                          r"\(distribution '(first|second)-grid'\)"):
        PluginHost()  # every installed entry point, as the command line loads them
    from accdiffusion import cli

    assert cli.main(["plugins"]) == 2
    assert "distribution 'first-grid'" in capsys.readouterr().err
