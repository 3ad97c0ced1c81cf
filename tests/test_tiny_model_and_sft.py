"""The built-in tiny model is deterministic; an SFT stage through TRL changes its weights."""

from __future__ import annotations

import hashlib

import torch

from trainables.stages import get_runner
from trainables.tasks import load_examples
from trainables.tiny_model import build_tiny_model

CORPUS = [f"Instructions: question {i} Answer: The best answer is {'ABCD'[i % 4]}." for i in range(200)]
TRAINING = {"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
            "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_model_build_is_deterministic(tmp_path):
    a = build_tiny_model(CORPUS, tmp_path / "a")
    b = build_tiny_model(CORPUS, tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(a / name) == _digest(b / name), name
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(a)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 2, 64)


def test_sft_stage_changes_parameters_and_lowers_loss(tiny_model_path, data_dir, tmp_path):
    from trainables.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples = load_examples("toxigen_qa", "train", size=64, data_dir=data_dir)
    stage = {"method": "sft", "learning_rate": 3e-3, "batch_size": 8, "steps": 12, "seed": 0}
    rows = get_runner("sft")(model=model, tokenizer=tokenizer, stage=stage, examples=examples,
                             training=TRAINING, max_length=256, work_dir=str(tmp_path / "work"))
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < rows[0]["loss"]
    # Cosine schedule with no warmup: the logged learning rate starts at the peak and decays.
    assert rows[0]["learning_rate"] == max(r["learning_rate"] for r in rows)
    assert rows[-1]["learning_rate"] < 0.1 * stage["learning_rate"]
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before), "every parameter tensor should have been updated"
