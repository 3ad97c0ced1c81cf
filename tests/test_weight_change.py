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
