"""The per-worker loop: run one chain's stages in order, evaluating after each.

Reads top to bottom like the data flow in DESIGN.md:

    base model ─► evaluate (stage 0)
    for each stage: load previous weights ─► train (method's runner) ─► checkpoint (safetensors)
                    ─► evaluate every eval task ─► rows ─► Parquet ─► report metrics

The same function runs inside a Ray Train worker (TorchTrainer) or directly inside a Tune
trial; `report` is whatever sends metrics to Ray there. Plans are plain dicts built by
`study.plan`, so this module never imports `study`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from trainables.evaluate import evaluate_examples, group_accuracy
from trainables.models import load_model_and_tokenizer, save_checkpoint
from trainables.replay import replay_rows, replay_sample
from trainables.results_writer import SCHEMAS, write_part
from trainables.stage_measurements import curvature_rows, weight_row
from trainables.stages import get_runner
from trainables.tasks import load_examples

Reporter = Callable[[dict[str, Any]], None]


def checkpoint_dir(plan: dict, stage: int) -> Path:
    return Path(plan["study_dir"]) / "checkpoints" / plan["trial_id"] / f"stage{stage}"


def stage_part(plan: dict, stage: int) -> str:
    return f"{plan['trial_id']}.stage{stage}"


def run_chain(plan: dict, *, report: Reporter | None = None, executor: str = "function") -> dict[str, Any]:
    """Run every stage of `plan`; write trials/evals/predictions/train_log parts; return the last metrics."""
    report = report or (lambda metrics: None)
    _quiet_libraries()
    study_dir = Path(plan["study_dir"])
    model_cfg = plan["model"]
    eval_sets = {
        e["task"]: load_examples(e["task"], "eval", size=e["size"], data_dir=plan["data_dir"], data_seed=plan["data_seed"])
        for e in plan["eval_tasks"]
    }
    clear_trial_parts(study_dir, plan["trial_id"])
    trial_rows = [_trial_row(plan, s, executor, status="pending") for s in plan["stages"]]
    write_part(study_dir, "trials", plan["trial_id"], trial_rows)

    model, tokenizer = load_model_and_tokenizer(model_cfg["path"], dtype=model_cfg["dtype"])
    metrics = _evaluate_and_write(plan, 0, model, tokenizer, eval_sets)
    report(metrics)

    for index, stage in enumerate(plan["stages"]):
        number = stage["stage"]
        if index > 0:
            # Each stage starts from the checkpoint the previous one saved (what a resumed run does too).
            model, tokenizer = load_model_and_tokenizer(str(checkpoint_dir(plan, number - 1)), dtype=model_cfg["dtype"])
        examples = load_examples(stage["task"], "train", size=stage["train_size"], data_dir=plan["data_dir"],
                                 data_seed=plan["data_seed"])
        own_examples = examples
        if stage.get("replay"):
            source = plan["stages"][stage["replay"]["from_stage"] - 1]
            replayed = replay_sample(
                load_examples(source["task"], "train", size=source["train_size"], data_dir=plan["data_dir"],
                              data_seed=plan["data_seed"]),
                stage["replay"]["fraction"], stage["seed"])
            write_part(study_dir, "replay", stage_part(plan, number),
                       replay_rows(plan["trial_id"], number, source["stage"], replayed))
            examples = replayed if stage["replay"].get("only") else list(examples) + replayed
        work_dir = study_dir / "_work" / plan["trial_id"] / f"stage{number}"
        start = time.perf_counter()
        for method in ("dpo", "ppo", "rloo"):  # a "base" reference / a trained reward start from the base model
            if method in stage:
                stage = {**stage, method: {**stage[method], "base_model_path": model_cfg["path"]}}
        outcome = get_runner(stage["method"])(
            model=model, tokenizer=tokenizer, stage=stage, examples=examples, training=plan["training"],
            max_length=int(model_cfg["max_length"]), work_dir=str(work_dir), model_dtype=model_cfg["dtype"],
        )
        log_rows = outcome.log_rows
        seconds = time.perf_counter() - start
        shutil.rmtree(work_dir, ignore_errors=True)
        save_checkpoint(model, tokenizer, checkpoint_dir(plan, number))
        write_part(study_dir, "train_log", stage_part(plan, number),
                   [{"trial_id": plan["trial_id"], "stage": number, **row} for row in log_rows])
        previous = checkpoint_dir(plan, number - 1) if number > 1 else model_cfg["path"]
        write_part(study_dir, "weights", stage_part(plan, number),
                   [weight_row(plan["trial_id"], number, checkpoint_dir(plan, number), previous, model_cfg["path"])])
        metrics = _evaluate_and_write(plan, number, model, tokenizer, eval_sets)
        trial_rows[index] = _trial_row(plan, stage, executor, status="finished", seconds=seconds,
                                       n_train=outcome.n_examples)
        write_part(study_dir, "trials", plan["trial_id"], trial_rows)
        metrics.update({"train_seconds": seconds, "train_loss": log_rows[-1]["loss"] if log_rows else float("nan")})
        curvature = plan.get("curvature") or {}
        if curvature.get("enabled") and number in curvature["stages"]:
            rows = curvature_rows(plan, stage, checkpoint_dir(plan, number), own_examples)
            write_part(study_dir, "curvature", stage_part(plan, number), rows)
            top = next((r for r in rows if r["group"] == "all" and r["eigenvalue"] is not None), None)
            if top is not None:
                metrics["spectral_radius"] = abs(top["eigenvalue"])
        report(metrics)
    shutil.rmtree(study_dir / "_work" / plan["trial_id"], ignore_errors=True)
    return metrics


def clear_trial_parts(study_dir: Path, trial_id: str) -> None:
    """A (re)started trial replaces all of its earlier rows: a rerun with fewer stages or a
    different eval set must not leave stale parts beside the new ones."""
    for table in SCHEMAS:
        for part in (study_dir / table).glob(f"{trial_id}.*parquet"):
            part.unlink()


def _quiet_libraries() -> None:
    """Progress bars from datasets/transformers flood Ray's driver log; metrics go to Parquet."""
    import os

    import datasets
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _evaluate_and_write(plan: dict, stage: int, model: Any, tokenizer: Any, eval_sets: dict[str, list]) -> dict[str, Any]:
    eval_rows, prediction_rows = [], []
    metrics: dict[str, Any] = {"stage": stage, "trial_id": plan["trial_id"]}
    batch_size = int(plan["training"]["eval_batch_size"])
    for task, examples in eval_sets.items():
        scored = evaluate_examples(model, tokenizer, examples, batch_size=batch_size,
                                   max_length=int(plan["model"]["max_length"]))
        for row in group_accuracy(scored):
            eval_rows.append({"trial_id": plan["trial_id"], "stage": stage, "eval_task": task, "metric": "accuracy", **row})
            if row["group"] == "all":
                metrics[f"{task}/accuracy"] = row["accuracy"]
        prediction_rows.extend(
            {
                "trial_id": plan["trial_id"], "stage": stage, "eval_task": task, "example_id": s.example_id,
                "groups": list(s.groups), "label": s.label_name, "prediction": s.prediction_name,
                "correct": s.correct, "margin": s.margin,
            }
            for s in scored
        )
    write_part(plan["study_dir"], "evals", stage_part(plan, stage), eval_rows)
    write_part(plan["study_dir"], "predictions", stage_part(plan, stage), prediction_rows)
    return metrics


def _method_settings(stage: dict) -> str:
    """The method's own settings as JSON (e.g. DPO beta, PPO kl_coef), without machine paths."""
    settings = {k: v for k, v in (stage.get(stage["method"]) or {}).items() if k != "base_model_path"}
    return json.dumps(settings, sort_keys=True)


def _trial_row(plan: dict, stage: dict, executor: str, *, status: str, seconds: float | None = None,
               n_train: int | None = None) -> dict[str, Any]:
    return {
        "trial_id": plan["trial_id"], "chain": plan["chain"], "seed": plan["seed"], "stage": stage["stage"],
        "method": stage["method"], "method_settings": _method_settings(stage),
        "task": stage["task"], "learning_rate": stage["learning_rate"],
        "batch_size": stage["batch_size"], "steps": stage["steps"], "stage_seed": stage["seed"],
        "train_size": stage["train_size"], "n_train_examples": n_train, "data_seed": plan["data_seed"],
        "replay_from_stage": (stage.get("replay") or {}).get("from_stage"),
        "replay_fraction": (stage.get("replay") or {}).get("fraction"),
        "stage_key": stage["stage_key"], "model": plan["model"]["name"],
        "grid_point": json.dumps(plan["grid_point"], sort_keys=True), "executor": executor,
        "train_seconds": seconds, "status": status,
    }
