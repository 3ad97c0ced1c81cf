"""This machine's cache: what the engine builds once per machine and reuses across studies.

The built-in tiny model (`models/`, trainables.tiny_model) and the fitted local toxicity
classifier (`classifiers/`, trainables.toxicity.local_classifier) live under $STUDY_CACHE_DIR,
else ~/.cache/chained-tuning-study. Entries are named by a content hash of what built them, so
a stale entry is never read as a current one. Nothing here is a result: a study folder never
points into this cache, and deleting it only costs the rebuild.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "STUDY_CACHE_DIR"


def cache_root() -> Path:
    """$STUDY_CACHE_DIR, else ~/.cache/chained-tuning-study (read at each call: tests set it)."""
    return Path(os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "chained-tuning-study"))


def models_cache() -> Path:
    """Where the built-in tiny model is built (one folder per content hash)."""
    return cache_root() / "models"


def classifiers_cache() -> Path:
    """Where the local toxicity classifier is fitted and kept (one folder per cache key)."""
    return cache_root() / "classifiers"
