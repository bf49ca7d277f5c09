"""pytest plugin providing tiny offline diffusers pipelines as session-scoped fixtures.

Registered through the ``pytest11`` entry point, so installing
``accdiffusion-testing`` makes these fixtures available to every test suite:

* ``tiny_sdxl_path``, ``tiny_sd15_path``, ``tiny_sd21_path``: folders holding the
  saved pipelines, built once per session;
* ``tiny_sdxl_pipeline``, ``tiny_sd15_pipeline``: those pipelines loaded back
  with ``DiffusionPipeline.from_pretrained``.

The pipeline fixtures are shared by the whole session; tests that change a
pipeline's state (scheduler, attention processors, device, dtype) should load
their own copy from the matching ``*_path`` fixture instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers import DiffusionPipeline

from accdiffusion_testing.models import make_tiny_sd15, make_tiny_sd21, make_tiny_sdxl


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny SDXL pipeline (see :func:`accdiffusion_testing.make_tiny_sdxl`)."""
    return make_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_sd15_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny SD 1.5 pipeline (see :func:`accdiffusion_testing.make_tiny_sd15`)."""
    return make_tiny_sd15(tmp_path_factory.mktemp("tiny-sd15"))


@pytest.fixture(scope="session")
def tiny_sd21_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny SD 2.1 (v-prediction) pipeline (see :func:`accdiffusion_testing.make_tiny_sd21`)."""
    return make_tiny_sd21(tmp_path_factory.mktemp("tiny-sd21"))


@pytest.fixture(scope="session")
def tiny_sdxl_pipeline(tiny_sdxl_path: Path) -> DiffusionPipeline:
    """The tiny SDXL pipeline loaded from ``tiny_sdxl_path``, shared by the session."""
    return DiffusionPipeline.from_pretrained(tiny_sdxl_path)


@pytest.fixture(scope="session")
def tiny_sd15_pipeline(tiny_sd15_path: Path) -> DiffusionPipeline:
    """The tiny SD 1.5 pipeline loaded from ``tiny_sd15_path``, shared by the session."""
    return DiffusionPipeline.from_pretrained(tiny_sd15_path)
