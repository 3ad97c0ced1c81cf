"""A chain on a chat model (the ChatML tokenizer family): planned with the chat format, trained
through TRL's conversational data (SFT) and the seam's rows (DPO), and evaluated with the template."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from contract.plan import RunInfo
from study.orchestrate import chat_format
from study.planner import build_plans
from study.spec_loading import spec_from_dict
from trainables.chain import run_chain


def test_a_chat_model_chain_trains_and_scores_through_its_template(family_model_path, data_dir, tmp_path):
    from trainables.evaluation.option_scoring import evaluate_examples
    from trainables.models import load_model_and_tokenizer
    from tasks import load_examples
    from trainables.tokenization import AnswerEncoder

    path = family_model_path("chat")
    spec = spec_from_dict({
        "name": "chat", "model": {"name": str(path), "max_length": 320},
        "tasks": {"toxigen_qa": {"train_size": 12, "eval_size": 10}, "arc_easy": {"train_size": 12, "eval_size": 10}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 2},
        "chains": {"c": [{"task": "toxigen_qa"}, {"task": "arc_easy", "method": "dpo"}]}, "data_dir": str(data_dir),
    })
    study = tmp_path / "chat"
    [typed] = build_plans(spec, study_dir=study, data_dir=str(data_dir), base_model_path=str(path),
                          chat=chat_format(spec, str(path)))
    plan = typed.to_dict()
    assert plan["model"]["chat"] is True
    metrics = run_chain(dataclasses.replace(typed, run=RunInfo("r1", reuse_earlier_runs=False)))
    assert metrics["status"] == "finished"
    trials = pl.read_parquet(study / "trials" / "*.parquet").sort("stage")
    assert trials["status"].to_list() == ["finished", "finished"]
    assert trials["n_train_examples"].to_list() == [12, 12]

    # The stored margins are the chat-template scores of the final checkpoint, not plain-text ones.
    checkpoint = study / "stages" / plan["stages"][-1]["stage_key"] / "checkpoint"
    model, tokenizer = load_model_and_tokenizer(str(checkpoint), dtype="float32")
    examples = load_examples("arc_easy", "eval", size=10, data_dir=str(data_dir), data_seed=0)
    stored = (pl.read_parquet(study / "predictions" / "*.parquet")
              .filter((pl.col("stage") == 2) & (pl.col("eval_task") == "arc_easy")))
    margins = dict(zip(stored["example_id"], stored["margin"]))
    chat = evaluate_examples(model, AnswerEncoder(tokenizer, chat=True), examples, max_length=320, batch_size=32)
    plain = evaluate_examples(model, AnswerEncoder(tokenizer, chat=False), examples, max_length=320, batch_size=32)
    assert [margins[s.example_id] for s in chat] == pytest.approx([s.margin for s in chat], abs=1e-4)
    assert [margins[s.example_id] for s in plain] != pytest.approx([s.margin for s in plain], abs=1e-2)
