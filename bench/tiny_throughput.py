"""The tiny model's CPU tokens/s, training and scoring: the `cpu` entry of study/throughput.yaml.

    python bench/tiny_throughput.py [--steps N]

One thread (a demo trial's cpus_per_trial: 1). Trains SFT on 800 ARC-Easy examples in batches of
16 for N steps (tokens fed: N × 16 × the mean training sequence, as `study plan` counts them) and
scores 300 ARC-Easy eval examples by option log-likelihood (tokens: every option's whole scored
sequence, as `study plan` counts them; shared-context scoring runs each context once, so the
scoring rate per counted token is high). Needs the data mirror ($STUDY_DATA_DIR). Numbers depend
on the machine and its load: write the date, machine and load beside the numbers you record.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    import torch

    from tasks import load_examples
    from tests.plans import model_plan, stage_plan, training_plan
    from trainables.evaluation.option_scoring import evaluate_examples
    from trainables.models import load_model_and_tokenizer, resolve_base_model
    from trainables.stages.sft import run_sft
    from trainables.token_counts import TokenCounter
    from trainables.tokenization import AnswerEncoder

    torch.set_num_threads(1)
    data = os.environ.get("STUDY_DATA_DIR")
    path = resolve_base_model("tiny", data)
    model, tokenizer = load_model_and_tokenizer(path)
    counter = TokenCounter(tokenizer, chat=False, chars_per_token=4.0)
    train = load_examples("arc_easy", "train", size=800, data_dir=data, data_seed=0)
    evals = load_examples("arc_easy", "eval", size=300, data_dir=data, data_seed=0)
    lengths = counter.training_lengths(train)
    batch = 16
    stage = stage_plan({"task": "arc_easy", "learning_rate": 3e-3, "batch_size": batch, "steps": args.steps})
    with tempfile.TemporaryDirectory() as work_dir:
        start = time.perf_counter()
        run_sft(model=model, tokenizer=AnswerEncoder(tokenizer), stage=stage, examples=train,
                training=training_plan(), model_plan=model_plan(path, max_length=384), work_dir=work_dir)
        train_seconds = time.perf_counter() - start
    train_tokens = args.steps * batch * sum(lengths) / len(lengths)
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        evaluate_examples(model, AnswerEncoder(tokenizer), evals, batch_size=32, max_length=384)
    score_seconds = time.perf_counter() - start
    scored = counter.scored(evals, 384).tokens
    print(f"training: {train_tokens:,.0f} tokens in {train_seconds:.1f} s = {train_tokens / train_seconds:,.0f} tokens/s")
    print(f"scoring:  {scored:,} tokens in {score_seconds:.1f} s = {scored / score_seconds:,.0f} tokens/s")


if __name__ == "__main__":
    main()
