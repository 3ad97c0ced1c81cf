"""How a stage is published (trainables.stage_store): a reader in another process sees nothing of
a stage until its record, then the whole stage; the record comes after everything is flushed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest

from contract.layout import StudyLayout
from contract.plan import RunInfo
from trainables import stage_store
from trainables.stage_store import StageStore

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB of known bytes


def _writer(study, steps):
    """A process that publishes stage k step by step, writing `<n>.at` at each step and waiting
    for `<n>.go` before going on."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {os.getcwd()!r})
        from contract.plan import RunInfo
        from trainables.stage_store import StageStore

        steps = Path({str(steps)!r})
        def pause(n):
            (steps / f"{{n}}.at").touch()
            while not (steps / f"{{n}}.go").exists():
                time.sleep(0.02)

        with StageStore({str(study)!r}, RunInfo("r")).claim("k") as entry:
            staging = entry.checkpoint_staging()
            (staging / "model.safetensors").write_bytes(bytes(range(256)) * 4096)
            (staging / "config.json").write_text("{{}}")
            pause(1)  # checkpoint saved, not published
            entry.publish_checkpoint(staging)
            pause(2)  # checkpoint published, no rows, no record
            entry.write_rows("train_log", [{{"trial_id": "t", "stage": 1, "step": 1, "loss": 1.0,
                                             "grad_norm": 0.5, "learning_rate": 1e-3, "seconds": 0.1}}])
            pause(3)  # rows written, no record
            entry.finish(trial_id="t", status="finished")
            pause(4)  # published
    """)
    return subprocess.Popen([sys.executable, "-c", code])


def _wait(path, process):
    for _ in range(1500):
        if path.exists():
            return
        assert process.poll() is None, "the writer died"
        time.sleep(0.02)
    raise AssertionError(f"the writer never reached {path.name}")


def _reader_view(study):
    """What a reader (this process, no claim) makes of stage k."""
    entry = StageStore(study, RunInfo("r")).entry("k")
    return entry.usable_record(), entry


def test_a_reader_sees_no_stage_until_its_record_then_the_whole_stage(tmp_path):
    steps = tmp_path / "steps"
    steps.mkdir()
    writer = _writer(tmp_path, steps)
    try:
        for step in (1, 2, 3):
            _wait(steps / f"{step}.at", writer)
            record, entry = _reader_view(tmp_path)
            assert record is None, f"a record before the stage was whole (step {step})"
            assert entry.checkpoint.is_dir() == (step >= 2)  # never a partial checkpoint/: it is renamed whole
            (steps / f"{step}.go").touch()
        _wait(steps / "4.at", writer)
        record, entry = _reader_view(tmp_path)
        assert record is not None and record.trained_by == "t"
        assert record.trained_on == socket.gethostname()  # the writer ran outside Ray
        assert (entry.checkpoint / "model.safetensors").read_bytes() == WEIGHTS
        assert pq.read_table(entry.paths.rows("train_log")).num_rows == 1
        assert not list(entry.paths.folder.glob(".checkpoint.*"))
        (steps / "4.go").touch()
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()


@pytest.mark.parametrize("killed_at", [1, 2, 3])
def test_a_writer_killed_mid_publication_leaves_no_usable_stage(tmp_path, killed_at):
    """SIGKILL the writer before its record: no reader counts the stage, and the next holder's
    reset clears what was left (the staging folder, a checkpoint without a record, rows)."""
    steps = tmp_path / "steps"
    steps.mkdir()
    writer = _writer(tmp_path, steps)
    for step in range(1, killed_at):
        _wait(steps / f"{step}.at", writer)
        (steps / f"{step}.go").touch()
    _wait(steps / f"{killed_at}.at", writer)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert _reader_view(tmp_path)[0] is None
    with StageStore(tmp_path, RunInfo("r")).claim("k") as entry:  # the dead writer's claim is free
        assert entry.usable_record() is None
        entry.reset()
        assert sorted(p.name for p in entry.paths.folder.iterdir()) == [".lock", "holder.json"]


def test_the_checkpoint_and_rows_are_flushed_before_they_are_published(tmp_path, monkeypatch):
    """Every checkpoint file is fsynced before the rename that publishes it, and every rows file
    before the record (which is what makes them count)."""
    events = []
    real_fsync, real_replace, real_write_record = os.fsync, os.replace, stage_store.write_record

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(src)))
        return real_replace(src, dst)

    def write_record(path, record):
        events.append(("record", str(path)))
        return real_write_record(path, record)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(stage_store.os, "replace", replace)
    monkeypatch.setattr(stage_store, "write_record", write_record)
    with StageStore(tmp_path, RunInfo("r")).claim("k") as entry:
        staging = entry.checkpoint_staging()
        for name in ("model.safetensors", "config.json"):
            (staging / name).write_bytes(b"x" * 10)
        entry.publish_checkpoint(staging)
        entry.write_rows("train_log", [{"trial_id": "t", "stage": 1, "step": 1, "loss": 1.0, "grad_norm": 0.5,
                                        "learning_rate": 1e-3, "seconds": 0.1}])
        entry.finish(trial_id="t", status="finished")
    position = {event: index for index, event in enumerate(events)}
    publish = position[("rename", str(staging))]
    record = position[("record", str(StudyLayout(tmp_path).stage("k").record))]
    for name in ("model.safetensors", "config.json"):
        assert position[("fsync", str(staging / name))] < publish, name
    assert position[("fsync", str(entry.paths.rows("train_log")))] < record
