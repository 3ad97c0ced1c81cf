"""Which data a study reads, on a clone with the mirror and on a user's machine without it.

The Makefile sets STUDY_DATA_DIR only when ../shared/data exists (a real `make` on a copy of it);
`study validate` and `study run` print one line naming the source; with no mirror and the Hub
unreachable (offline mode, an empty Hugging Face cache) `study run` names every dataset it could
not fetch and how to use a local copy, exits 2 and writes nothing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contract.layout import StudyLayout
from study.cli import main
from tests.mirror import MIRROR, needs_mirror

REPO = Path(__file__).resolve().parents[1]
HUB_LINE = "data: Hugging Face Hub (set STUDY_DATA_DIR or data_dir: to use a local copy)"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STUDY_DATA_DIR" and not k.startswith("HF_")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_the_makefile_uses_the_mirror_only_when_it_exists(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "Makefile", clone / "Makefile")

    def data_dir() -> str:
        done = subprocess.run(["make", "-s", "data-source"], cwd=clone, env=_env(), capture_output=True,
                              text=True, check=True, timeout=60)
        return done.stdout.strip()

    assert data_dir() == "STUDY_DATA_DIR="  # a user's clone: the Hub
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert data_dir() == f"STUDY_DATA_DIR={tmp_path / 'shared' / 'data'}"  # the mirror beside the checkout


@needs_mirror
def test_validate_names_the_local_mirror(capsys, monkeypatch):
    monkeypatch.setenv("STUDY_DATA_DIR", str(MIRROR))
    assert main(["validate", "demo"]) == 0
    out = capsys.readouterr().out
    assert f"data: local mirror at {MIRROR}\n" in out


def test_validate_names_the_hub_when_no_mirror_is_set(capsys, monkeypatch):
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    assert main(["validate", "demo"]) == 0
    assert f"{HUB_LINE}\n" in capsys.readouterr().out


@needs_mirror
def test_run_with_the_mirror_says_so_first(tmp_path):
    """`study run` on the mirror prints its line first; the study folder is held by another run
    (its lock taken here), so it stops (exit 2) after its data check, before training anything."""
    study_dir = tmp_path / "results" / "demo"
    study_dir.mkdir(parents=True)
    with open(StudyLayout(study_dir).run_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = subprocess.run([sys.executable, "-m", "study", "run", "demo", "--storage", str(tmp_path / "results")],
                              cwd=tmp_path, env=_env(STUDY_DATA_DIR=str(MIRROR)), capture_output=True, text=True,
                              timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[0] == f"data: local mirror at {MIRROR}"
    assert "another `study run` is using" in done.stderr


def test_run_without_mirror_and_without_the_hub_names_the_datasets_and_writes_nothing(tmp_path):
    hf = tmp_path / "hf"  # an empty Hugging Face cache: nothing to fall back on offline
    env = _env(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(hf), HF_DATASETS_CACHE=str(hf / "datasets"),
               STUDY_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "study", "run", "demo", "--storage", str(tmp_path / "results")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines()[0] == HUB_LINE
    err = done.stderr
    assert "could not fetch 2 datasets" in err
    # the demo's two tasks, each with the dataset it reads from
    assert "datasets.load_dataset('allenai/ai2_arc', 'ARC-Easy') (task arc_easy): ConnectionError" in err
    assert "toxiGen.json') (task toxigen_qa)" in err
    assert "set STUDY_DATA_DIR=/path/to/mirror (or data_dir: in the study file)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
