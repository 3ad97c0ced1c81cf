"""Streamed ‖θ_a − θ_b‖² equals a direct computation, across shards."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from trainables.weight_change import squared_distance


def test_squared_distance_matches_direct_computation_across_shards(tmp_path):
    """a: w = [1, 2, 3], b = [[1, 1], [1, 1]]; c: w = [0, 2, 5], b = [[1, 1], [1, 3]] (b in a 2nd shard).
    ‖a − c‖² = 1 + 0 + 4 + 0 + 0 + 0 + 4 = 9, over 7 parameters."""
    a, c = tmp_path / "a", tmp_path / "c"
    a.mkdir(), c.mkdir()
    save_file({"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.ones(2, 2)}, str(a / "model.safetensors"))
    save_file({"w": torch.tensor([0.0, 2.0, 5.0])}, str(c / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.tensor([[1.0, 1.0], [1.0, 3.0]])}, str(c / "model-00002-of-00002.safetensors"))
    assert squared_distance(a, c) == (9.0, 7)
    assert squared_distance(a, a) == (0.0, 7)

    torch.manual_seed(0)
    big_a, big_b = torch.randn(300, 70), torch.randn(300, 70)
    save_file({"w": big_a}, str(tmp_path / "big_a.safetensors"))
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir()
    (tmp_path / "big_a.safetensors").rename(tmp_path / "x" / "model.safetensors")
    save_file({"w": big_b}, str(tmp_path / "y" / "model.safetensors"))
    expected = float(((big_a.double() - big_b.double()) ** 2).sum())
    assert squared_distance(tmp_path / "x", tmp_path / "y")[0] == pytest.approx(expected, rel=1e-12)


def test_different_tensor_names_are_refused(tmp_path):
    for name, tensors in {"a": {"w": torch.zeros(2)}, "b": {"v": torch.zeros(2)}}.items():
        (tmp_path / name).mkdir()
        save_file(tensors, str(tmp_path / name / "model.safetensors"))
    with pytest.raises(ValueError, match="different tensors"):
        squared_distance(tmp_path / "a", tmp_path / "b")


def test_weights_rows_carry_every_normalisation_from_two_tiny_checkpoints(tmp_path):
    """Base a: w = [1, 2, 3], b = [[1, 1], [1, 1]]; stage 1 c: w = [0, 2, 5], b = [[1, 1], [1, 3]];
    stage 2 d: w = [1, 2, 5], b = [[1, 1], [1, 3]]; N = 7 parameters.
    Stage 1: ‖c − a‖² = 1 + 4 + 4 = 9 (from previous = from base) → 9/7 = 1.2857, sqrt 1.1339.
    Stage 2: ‖d − c‖² = 1 → 1/7 = 0.14286, sqrt 0.37796; ‖d − a‖² = 4 + 4 = 8 → 8/7, sqrt 1.0690.
    Written as the engine writes the `weights` table, read back as the analysis reads it."""
    import math

    import polars as pl

    from analysis import with_weight_norms
    from trainables.results_writer import write_part
    from trainables.stage_measurements import weight_row

    tensors = {"a": ([1.0, 2.0, 3.0], [[1.0, 1.0], [1.0, 1.0]]), "c": ([0.0, 2.0, 5.0], [[1.0, 1.0], [1.0, 3.0]]),
               "d": ([1.0, 2.0, 5.0], [[1.0, 1.0], [1.0, 3.0]])}
    for name, (w, b) in tensors.items():
        (tmp_path / name).mkdir()
        save_file({"w": torch.tensor(w), "b": torch.tensor(b)}, str(tmp_path / name / "model.safetensors"))
    a, c, d = (tmp_path / n for n in "acd")
    rows = [weight_row("t", 1, c, a, a), weight_row("t", 2, d, c, a)]
    assert [(r["l2_sq_from_previous"], r["l2_sq_from_base"], r["n_params"]) for r in rows] == [(9.0, 9.0, 7), (1.0, 8.0, 7)]
    write_part(tmp_path / "results", "weights", "t", rows)
    stored = pl.read_parquet(tmp_path / "results" / "weights" / "*.parquet")
    normalised = with_weight_norms(stored).collect().sort("stage")
    assert normalised["mean_sq_from_previous"].to_list() == pytest.approx([9 / 7, 1 / 7])
    assert normalised["rms_from_previous"].to_list() == pytest.approx([math.sqrt(9 / 7), math.sqrt(1 / 7)])
    assert normalised["mean_sq_from_base"].to_list() == pytest.approx([9 / 7, 8 / 7])
    assert normalised["rms_from_base"].to_list() == pytest.approx([1.1338934, 1.0690450])
    assert normalised.select(stored.columns).equals(stored)  # the stored columns, unchanged
