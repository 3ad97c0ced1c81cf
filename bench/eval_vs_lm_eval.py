"""Option scoring: this engine against lm-evaluation-harness, per tokenizer family.

    python bench/eval_vs_lm_eval.py [--n 500] [--family-n 200] [--batch-size 32] [--repeats 3] [--threads 1]
                                    [--families tiny,bytelevel,...] [--data-dir DIR] [--cache-dir DIR]

Families: `tiny` (the built-in tiny model, the first N ARC-Easy test questions) and the six
tokenizer families of tests/tokenizer_families.py (tiny random models of real architectures
with byte-level BPE without/with prefix space, SentencePiece through the Llama class and as
Llama-2's legacy tokenizer.json, a BOS-less Qwen2 tokenizer and a ChatML chat model; the first
--family-n questions). Each model scores its questions (source order, the Appendix A.2 template)
in this process, warm (one small untimed run of each side first):

  engine    trainables.evaluation.option_scoring.evaluate_examples through the tokenization seam (shared-context
            scoring, the default; the chat template for the chat model)
  lm-eval   lm_eval.evaluator.evaluate on HFLM wrapping the same loaded model and tokenizer over a
            local jsonl task (tests/lm_eval_reference.py: doc_to_text = prompt + answer prefix,
            choices = the options, target_delimiter ""; for the chat model apply_chat_template with
            the answer prefix as gen_prefix); log_samples on, bootstrap_iters 0

Timed: from examples/docs in memory to predictions (the engine's tokenization included; for
lm-eval, building requests, running them, metrics and logged samples). Each side runs --repeats
times, interleaved; medians are reported. One row per family: throughput of each side, the ratio
engine / lm-eval, differing predictions, the largest |score difference|, and how many predictions
the old rule (each option tokenized on its own and appended to the context) would change.
Targets: 0 differing predictions in every family; ratio >= 4 on the tiny model.

Numbers depend on the machine and its load; compare ratios from one run only. On a small shared
machine, --threads 1 avoids the large stalls two torch threads suffer when another process takes
a core.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 4.0


def alone_rule_predictions(model: Any, tokenizer: Any, examples: list, batch_size: int, max_length: int) -> list[int]:
    """Predictions under the rule the engine used before its tokenization seam: the context
    tokenized with special tokens, each option tokenized on its own and appended."""
    from trainables.evaluation.option_scoring import _full_sequence_scores

    import torch

    pairs = []
    for ei, ex in enumerate(examples):
        context = tokenizer(ex.prompt + ex.answer_prefix)["input_ids"]
        for oi, option in enumerate(ex.options):
            cont = tokenizer(option, add_special_tokens=False)["input_ids"]
            ids = (list(context) + list(cont))[-(max_length + 1):]
            pairs.append((ei, oi, ids, min(len(cont), len(ids) - 1)))
    scores = [[0.0] * len(ex.options) for ex in examples]
    with torch.inference_mode():
        _full_sequence_scores(model, tokenizer, pairs, scores, batch_size)
    return [max(range(len(row)), key=lambda i: (row[i], -i)) for row in scores]


def bench_family(name: str, model: Any, tokenizer: Any, encoder: Any, examples: list, args, work: Path) -> dict:
    from tests.lm_eval_reference import LmEvalRunner, predictions, write_task
    from trainables.evaluation.option_scoring import evaluate_examples

    task_dir = work / f"task-{name}"
    task_dir.mkdir()
    write_task(task_dir, examples, chat=encoder.chat)
    runner = LmEvalRunner(model, tokenizer, task_dir, args.batch_size, args.max_length, chat=encoder.chat)

    def engine() -> tuple[float, list]:
        start = time.perf_counter()
        scored = evaluate_examples(model, encoder, examples, batch_size=args.batch_size, max_length=args.max_length)
        return time.perf_counter() - start, scored

    evaluate_examples(model, encoder, examples[: args.warmup], batch_size=args.batch_size, max_length=args.max_length)
    runner.run(runner.task_dict(), limit=args.warmup)
    times: dict[str, list[float]] = {"engine": [], "lm-eval": []}
    scored = samples = None
    for _ in range(args.repeats):
        seconds, scored = engine()
        times["engine"].append(seconds)
        task_dict = runner.task_dict()  # fresh task objects, built outside the clock
        seconds, samples = runner.run(task_dict)
        times["lm-eval"].append(seconds)
    assert scored is not None and samples is not None
    lm_predictions, lm_scores = predictions(samples)
    n = len(examples)
    median = {k: statistics.median(v) for k, v in times.items()}
    old = alone_rule_predictions(model, tokenizer, examples, args.batch_size, args.max_length)
    return {
        "family": name, "n": n,
        "engine": n / median["engine"], "lm-eval": n / median["lm-eval"],
        "ratio": median["lm-eval"] / median["engine"],
        "differ": sum(int(s.prediction != p) for s, p in zip(scored, lm_predictions)) if len(lm_predictions) == n else n,
        "max_diff": max(abs(a - b) for s, row in zip(scored, lm_scores) for a, b in zip(s.scores, row)),
        "old_differ": sum(int(p != q) for p, q in zip(old, lm_predictions)),
        "runs": times,
    }


def main(argv: list[str] | None = None) -> int:
    from tests.tokenizer_families import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="ARC-Easy test questions for the tiny model (default 500)")
    parser.add_argument("--family-n", type=int, default=200, help="questions for each tokenizer family (default 200)")
    parser.add_argument("--families", default=",".join(("tiny",) + FAMILIES),
                        help="comma-separated: tiny and/or " + ", ".join(FAMILIES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side, interleaved (median)")
    parser.add_argument("--warmup", type=int, default=16, help="questions in the untimed warm-up run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is steadier on a shared, busy machine")
    parser.add_argument("--data-dir", default=os.environ.get("STUDY_DATA_DIR"))
    parser.add_argument("--cache-dir", default=None,
                        help="where models are built (default $STUDY_CACHE_DIR, else a temp dir)")
    args = parser.parse_args(argv)
    unknown = set(args.families.split(",")) - {"tiny", *FAMILIES}
    if unknown:
        parser.error(f"unknown families: {', '.join(sorted(unknown))}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="eval-vs-lm-eval-"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf-datasets"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    import torch

    from tests.tokenizer_families import ensure_family_model, family_corpus
    from trainables.models import load_model_and_tokenizer
    from tasks import load_examples
    from trainables.tiny_model import ensure_tiny_model
    from trainables.tokenization import AnswerEncoder, resolve_chat_template

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir or os.environ.get("STUDY_CACHE_DIR") or work)
    print(f"torch threads {torch.get_num_threads()}, batch size {args.batch_size}, max length {args.max_length}, "
          f"repeats {args.repeats}; ARC-Easy test questions: {args.n} (tiny), {args.family_n} (families)")
    rows = []
    corpus = None
    for name in args.families.split(","):
        if name == "tiny":
            path, n = ensure_tiny_model(args.data_dir, cache / "models"), args.n
        else:
            corpus = corpus or family_corpus(args.data_dir)
            path, n = ensure_family_model(name, corpus, cache / "families"), args.family_n
        model, tokenizer = load_model_and_tokenizer(str(path), dtype="auto")
        model.eval()
        encoder = AnswerEncoder(tokenizer, chat=resolve_chat_template("auto", path.name, tokenizer))
        examples = load_examples("arc_easy", "eval", data_dir=args.data_dir, limit=n)
        rows.append(bench_family(name, model, tokenizer, encoder, examples, args, work))
        r = rows[-1]
        print(f"  {name}: engine runs {' '.join(f'{t:.3f}' for t in r['runs']['engine'])} s, "
              f"lm-eval runs {' '.join(f'{t:.3f}' for t in r['runs']['lm-eval'])} s", flush=True)

    print()
    header = f"{'family':22} {'n':>4} {'engine ex/s':>11} {'lm-eval ex/s':>12} {'ratio':>6} {'differ':>7} " \
             f"{'max|Δscore|':>11} {'old rule differ':>15}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['family']:22} {r['n']:4d} {r['engine']:11.1f} {r['lm-eval']:12.1f} {r['ratio']:5.2f}x "
              f"{r['differ']:7d} {r['max_diff']:11.2e} {r['old_differ']:15d}")
    tiny = next((r for r in rows if r["family"] == "tiny"), None)
    ok = all(r["differ"] == 0 for r in rows) and (tiny is None or tiny["ratio"] >= TARGET_RATIO)
    print(f"\ntargets (0 differences in every family; >= {TARGET_RATIO:.0f}x lm-eval on tiny): "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
