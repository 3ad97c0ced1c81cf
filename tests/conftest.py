"""Shared fixtures: the local dataset mirror, the built-in tiny model, a local Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.mirror import SKIP_REASON, mirror_dir

@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = mirror_dir()
    if path is None:
        pytest.skip(SKIP_REASON)
    return path

@pytest.fixture(scope="session")
def tiny_model_path(data_dir, tmp_path_factory) -> Path:
    from trainables.tiny_model import ensure_tiny_model

    cache = os.environ.get("STUDY_CACHE_DIR")
    return ensure_tiny_model(str(data_dir), Path(cache) / "models" if cache else tmp_path_factory.mktemp("models"))

@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster on 127.0.0.1 with 2 CPUs (no dashboard: it only slows tests)."""
    os.environ.pop("RAY_ADDRESS", None)
    from study.cluster import connect

    connect(num_cpus=2, dashboard=False)
    import ray

    yield ray
    ray.shutdown()

@pytest.fixture(scope="session")
def family_model_path(data_dir, tmp_path_factory):
    """name -> folder of that family's tiny random model (built once per session, on first use)."""
    import functools

    from tests.tokenizer_families import ensure_family_model, family_corpus

    cache = os.environ.get("STUDY_CACHE_DIR")
    # A persistent cache skips rebuilding across sessions (folders are named by a content hash).
    root = Path(cache) / "families" if cache else tmp_path_factory.mktemp("families")
    corpus = functools.cache(lambda: family_corpus(data_dir))  # read once, only if a family is asked for

    @functools.cache
    def path(name: str) -> Path:
        return ensure_family_model(name, corpus(), root)

    return path


@pytest.fixture(scope="session")
def tiny_shape():
    """The tiny architecture's ModelShape (the memory model's view of it, tests/model_shapes.py)."""
    from tests.model_shapes import tiny_config
    from trainables.memory_model import model_shape

    return model_shape(tiny_config())


@pytest.fixture(scope="session")
def llama7b():
    """Llama-2-7B's ModelShape, from its published config on the meta device."""
    from tests.model_shapes import llama7b_config
    from trainables.memory_model import model_shape

    return model_shape(llama7b_config())


@pytest.fixture(scope="session")
def llama7b_folder(tmp_path_factory):
    """A folder with Llama-2-7B's config.json only (what the memory check reads)."""
    from tests.model_shapes import llama7b_config

    folder = tmp_path_factory.mktemp("llama7b")
    llama7b_config().save_pretrained(folder)
    return str(folder)
