"""pytest plugin providing tiny offline diffusers pipelines and the plugin-testing kit as fixtures.

Registered through the ``pytest11`` entry point, so installing
``accdiffusion-testing`` makes these fixtures available to every test suite:

* ``tiny_sdxl_path``, ``tiny_sd15_path``, ``tiny_sd21_path``: folders holding the
  saved pipelines, built once per session;
* ``tiny_sdxl_pipeline``, ``tiny_sd15_pipeline``: those pipelines loaded back
  with ``DiffusionPipeline.from_pretrained``;
* ``plugin_host``: :func:`accdiffusion_testing.kit.host_with`, a factory of
  plugin hosts with exactly the given plugins
  (``plugin_host(plugin)``, ``plugin_host(plugin, entry_points=True)``);
* ``fake_codec``, ``fake_adapter``: a fresh :class:`~accdiffusion_testing.kit.FakeCodec`
  and :class:`~accdiffusion_testing.kit.FakeAdapter` per test.

The pipeline fixtures are shared by the whole session; tests that change a
pipeline's state (scheduler, attention processors, device, dtype) should load
their own copy from the matching ``*_path`` fixture instead. diffusers is
imported by the pipeline fixtures only, so a plugin's test session that uses
none of them does not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from accdiffusion_testing.kit import FakeAdapter, FakeCodec, host_with


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny SDXL pipeline (see :func:`accdiffusion_testing.make_tiny_sdxl`)."""
    from accdiffusion_testing.models import make_tiny_sdxl

    return make_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_sd15_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny SD 1.5 pipeline (see :func:`accdiffusion_testing.make_tiny_sd15`)."""
    from accdiffusion_testing.models import make_tiny_sd15

    return make_tiny_sd15(tmp_path_factory.mktemp("tiny-sd15"))


@pytest.fixture(scope="session")
def tiny_sd21_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny SD 2.1 (v-prediction) pipeline (see :func:`accdiffusion_testing.make_tiny_sd21`)."""
    from accdiffusion_testing.models import make_tiny_sd21

    return make_tiny_sd21(tmp_path_factory.mktemp("tiny-sd21"))


@pytest.fixture(scope="session")
def tiny_sdxl_pipeline(tiny_sdxl_path: Path) -> Any:
    """The tiny SDXL pipeline loaded from ``tiny_sdxl_path``, shared by the session."""
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(tiny_sdxl_path)


@pytest.fixture(scope="session")
def tiny_sd15_pipeline(tiny_sd15_path: Path) -> Any:
    """The tiny SD 1.5 pipeline loaded from ``tiny_sd15_path``, shared by the session."""
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(tiny_sd15_path)


@pytest.fixture
def plugin_host() -> Callable[..., Any]:
    """:func:`accdiffusion_testing.kit.host_with`: ``plugin_host(*plugins, entry_points=False)``
    builds a fresh plugin host with exactly those plugins (and the core's own stages)."""
    return host_with


@pytest.fixture
def fake_codec() -> FakeCodec:
    """A fresh :class:`~accdiffusion_testing.kit.FakeCodec` (2x, 3 latent channels)."""
    return FakeCodec()


@pytest.fixture
def fake_adapter() -> FakeAdapter:
    """A fresh :class:`~accdiffusion_testing.kit.FakeAdapter` (32 px native size, 4 latent channels)."""
    return FakeAdapter()
