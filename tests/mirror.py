"""Where the local dataset mirror is for tests: $STUDY_DATA_DIR, else ../shared/data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_REASON = "local dataset mirror absent (set STUDY_DATA_DIR or provide ../shared/data)"


def mirror_dir() -> Path | None:
    for candidate in (os.environ.get("STUDY_DATA_DIR"), str(REPO.parent / "shared" / "data")):
        if candidate and (Path(candidate) / "toxigen").is_dir():
            return Path(candidate).resolve()
    return None


MIRROR = mirror_dir()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason=SKIP_REASON)
