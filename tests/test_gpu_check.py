"""bench/gpu_check.py's CPU path: the scaled-down run of the GPU check (engine stage runners
against plain TRL trainers) measures both paths for SFT and DPO and reports memory as not
measured. No speed is asserted (speed is the script's output, not a test's)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_cpu_run_reports_both_paths_and_no_memory(gpu_check, data_dir, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "results.json"
    assert gpu_check.main(["--sizes", "tiny", "--steps", "2", "--examples", "8", "--eval-examples", "4",
                           "--seq-len", "256", "--threads", "1", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NOT A GPU MEASUREMENT" in printed
    results = json.loads(out.read_text())
    assert results["gpu"] is False and results["data"] == "ARC-Easy (mirror)"
    rows = {row["method"]: row for row in results["rows"]}
    assert set(rows) == {"sft", "dpo"}
    for row in rows.values():
        for path in ("engine", "trl"):
            assert row[path]["tokens_per_s"] > 0 and row[path]["timed_steps"] == 1
            assert row[path]["peak_gb"] is None
        assert row["ratio"] == pytest.approx(row["engine"]["tokens_per_s"] / row["trl"]["tokens_per_s"])
        assert row["memory"] == gpu_check.NOT_ON_CPU and row["estimate_gb"] is None
    # DPO's policy forward sees chosen and rejected together; its frozen reference (a deep copy
    # of the watched model) is not counted: both paths count the same tokens of the same batch.
    assert rows["dpo"]["engine"]["timed_tokens"] == rows["dpo"]["trl"]["timed_tokens"]
    assert results["eval"][0]["examples"] == 4 and results["eval"][0]["examples_per_s"] > 0


def test_peak_table_and_synthetic_data(gpu_check):
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_tflops("some other card") is None
    train, test, source = gpu_check.load_data(None, 5, 3)
    assert (len(train), len(test), source) == (5, 3, "synthetic (no mirror)")
    assert all(ex.options[ex.label] in ex.completion for ex in train)
