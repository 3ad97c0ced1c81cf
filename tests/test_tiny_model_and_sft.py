"""The built-in tiny model is deterministic; an SFT stage through TRL changes its weights."""

from __future__ import annotations

import hashlib

import torch

from contract.plan import TrainingPlan
from tests.plans import model_plan, stage_plan
from trainables.stages import get_runner
from tasks import load_examples
from trainables.tiny_model import build_tiny_model

CORPUS = [f"Instructions: question {i} Answer: The best answer is {'ABCD'[i % 4]}." for i in range(200)]
TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8})


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
    outcome = get_runner("sft")(model=model, tokenizer=tokenizer, stage=stage_plan(stage), examples=examples,
                                training=TRAINING, model_plan=model_plan(tiny_model_path, max_length=256),
                                work_dir=str(tmp_path / "work"))
    rows = outcome.log_rows
    assert outcome.n_examples == 64
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < rows[0]["loss"]
    # Cosine schedule with no warmup: the logged learning rate starts at the peak and decays.
    assert rows[0]["learning_rate"] == max(r["learning_rate"] for r in rows)
    assert rows[-1]["learning_rate"] < 0.1 * stage["learning_rate"]
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before), "every parameter tensor should have been updated"


def test_sft_loss_covers_only_the_answer(tiny_model_path, data_dir, tmp_path):
    """In a real training batch, the positions with labels (≠ -100) are exactly the completion's
    tokens plus EOS: the prompt (instruction + question + "Answer:") carries no loss."""
    from trainables.models import load_model_and_tokenizer
    from trainables.stages.sft import build_sft_trainer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    examples = load_examples("arc_easy", "train", size=4, data_dir=data_dir)
    stage = {"method": "sft", "learning_rate": 1e-3, "batch_size": 4, "steps": 1, "seed": 0}
    trainer = build_sft_trainer(model=model, tokenizer=tokenizer, stage=stage_plan(stage), examples=examples,
                                training=TRAINING, max_length=512, model_dtype="auto", work_dir=str(tmp_path / "work"))
    batch = next(iter(trainer.get_train_dataloader()))
    by_prompt = {ex.prompt: ex for ex in examples}
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        supervised = [t for t, label in zip(ids, labels) if label != -100]
        prompt_len = next(i for i, label in enumerate(labels) if label != -100)
        example = by_prompt[tokenizer.decode(ids[:prompt_len])]
        assert tokenizer.decode(supervised) == example.completion + tokenizer.eos_token


def test_examples_longer_than_max_length_are_dropped_not_cut(tiny_model_path, data_dir):
    from trainables.models import load_model_and_tokenizer
    from trainables.stages.sft import fitting_examples

    _, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    examples = load_examples("arc_easy", "train", size=40, data_dir=data_dir)
    lengths = [len(tokenizer(ex.prompt + ex.completion)["input_ids"]) + 1 for ex in examples]
    limit = sorted(lengths)[len(lengths) // 2]  # about half fit
    kept = fitting_examples(tokenizer, examples, limit)
    assert len(kept) == sum(n <= limit for n in lengths) and 0 < len(kept) < len(examples)


def test_auto_dtype_keeps_float32_weights_for_the_optimizer():
    """Pure-bf16 weights would drop most AdamW updates at lr 1e-5; only an explicit opt-in gets them."""
    import torch

    from trainables.models import bf16_autocast, weights_dtype

    assert weights_dtype("auto") is torch.float32 and weights_dtype("float32") is torch.float32
    assert weights_dtype("bfloat16") is torch.bfloat16
    assert bf16_autocast("float32") is False
    assert bf16_autocast("auto") is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
