"""lm-evaluation-harness as the reference scorer: the same model, tokenizer and prompts, scored
by `lm_eval.evaluator.evaluate` on `lm_eval.models.huggingface.HFLM` (used by the tests and by
bench/eval_vs_lm_eval.py).

The examples become a local jsonl task (output_type multiple_choice, metric acc):

- plain text: doc_to_text = prompt + answer_prefix, choices = the options (" A.", ... with
  their own leading space), target_delimiter "";
- chat template (`chat=True`): evaluate(..., apply_chat_template=True) renders the user turn
  (doc_to_text = the prompt) and the assistant's start `gen_prefix` = the answer prefix without
  its leading space, read from each doc, so the option continues the assistant turn.

HFLM gets the engine's BOS rule: add_bos_token is whatever the tokenizer adds by itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

TASK_NAME = "study_choice_reference"


def task_yaml(data_file: Path, *, chat: bool) -> str:
    # json.dumps gives a valid YAML scalar for the path (YAML is a superset of JSON).
    lines = [
        f"task: {TASK_NAME}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data_file))}",
        "output_type: multiple_choice",
        "test_split: test",
        "doc_to_text: text",
        "doc_to_choice: choices",
        "doc_to_target: label",
        'target_delimiter: ""',
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
    ]
    if chat:
        lines.insert(lines.index("doc_to_choice: choices"), "gen_prefix: prefix")
    return "\n".join(lines) + "\n"


def write_task(folder: Path, examples: Sequence[Any], *, chat: bool = False) -> None:
    data_file = folder / "docs.jsonl"
    with data_file.open("w", encoding="utf-8") as f:
        for ex in examples:
            doc = {"id": ex.example_id, "choices": list(ex.options), "label": ex.label}
            if chat:
                doc |= {"text": ex.prompt, "prefix": ex.answer_prefix.lstrip()}
            else:
                doc["text"] = ex.prompt + ex.answer_prefix
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    (folder / f"{TASK_NAME}.yaml").write_text(task_yaml(data_file, chat=chat), encoding="utf-8")


class LmEvalRunner:
    """HFLM around an already-loaded model and tokenizer, and the task folder it reads."""

    def __init__(self, model: Any, tokenizer: Any, task_dir: Path, batch_size: int, max_length: int,
                 *, chat: bool = False):
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        adds_bos = tokenizer("x")["input_ids"] != tokenizer("x", add_special_tokens=False)["input_ids"]
        self.lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                       add_bos_token=adds_bos)
        self.manager = TaskManager(include_path=str(task_dir), include_defaults=False)
        self.chat = chat

    def task_dict(self) -> Any:
        return self.manager.load([TASK_NAME])

    def run(self, task_dict: Any, limit: int | None = None) -> tuple[float, list[dict]]:
        """(seconds, logged samples in doc order)."""
        from lm_eval.evaluator import evaluate

        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bars
            results = evaluate(self.lm, task_dict, limit=limit, bootstrap_iters=0, log_samples=True, verbosity="ERROR",
                               apply_chat_template=self.chat)
        seconds = time.perf_counter() - start
        return seconds, sorted(results["samples"][TASK_NAME], key=lambda s: s["doc_id"])


def predictions(samples: Sequence[dict]) -> tuple[list[int], list[list[float]]]:
    """(prediction, option scores) per sample: argmax of the log-likelihoods, first of equals."""
    out, scores = [], []
    for s in samples:
        row = [float(resp[0]) for resp in s["filtered_resps"]]  # (loglikelihood, is_greedy) per choice
        scores.append(row)
        out.append(max(range(len(row)), key=lambda i: (row[i], -i)))
    return out, scores


def reference_predictions(model: Any, tokenizer: Any, examples: Sequence[Any], work_dir: Path, *, chat: bool = False,
                          batch_size: int = 16, max_length: int = 512) -> tuple[list[int], list[list[float]], list[dict]]:
    """lm-eval's (predictions, scores, samples) for `examples`, in their order."""
    work_dir.mkdir(parents=True, exist_ok=True)
    write_task(work_dir, examples, chat=chat)
    runner = LmEvalRunner(model, tokenizer, work_dir, batch_size, max_length, chat=chat)
    _, samples = runner.run(runner.task_dict())
    preds, scores = predictions(samples)
    return preds, scores, samples
