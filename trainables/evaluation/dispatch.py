"""Evaluate one model on every eval task of a plan: the rows of the evals and predictions tables.

Which evaluator runs depends on the task's kind and the modes the study asked for:
- choice tasks, mode "score": option log-likelihood (option_scoring.py), metric accuracy, plus the
  task's extra metrics (BBQ bias scores) and each prediction's role;
- choice tasks, mode "generate": the paper-exact answer, generated and parsed (generated_answers.py),
  metrics generated_accuracy and unparseable;
- generation tasks: greedy continuations judged by a toxicity classifier (safety.py, with the
  classifiers of trainables/toxicity/), metric safe.
Every evaluator runs in the plan's evaluation precision (precision.py), whichever road the model
came by (loaded, trained here, consolidated); in a multi-worker trial every rank runs a share of
its batches (over_ranks.py).
Rows come back with stage = -1; the chain fills in the stage number when it publishes them.
"""

from __future__ import annotations

import functools
from typing import Any

from contract.methods import GENERATE_MODE, SCORE_MODE
from contract.plan import GenerationPlan, TrialPlan
from contract.schema import EVALUATE
from tasks import get_task
from tasks.definition import PRIMARY_METRIC
from trainables import timings
from trainables.evaluation import generated_answers
from trainables.evaluation.option_scoring import evaluate_examples, grouped_accuracy_rows
from trainables.evaluation.over_ranks import judges_here, over_ranks
from trainables.evaluation.precision import scoring
from trainables.machine_cache import classifiers_cache
from trainables.tokenization import encoder_for


def primary_metric(task: str) -> str:
    return PRIMARY_METRIC[get_task(task).kind]


def evaluate_rows(plan: TrialPlan, model: Any, tokenizer: Any, eval_sets: dict[str, list], *,
                  shared: bool = False) -> tuple[list, list]:
    """Rows of the evals and predictions tables for one model (stage column filled in later).
    Every task is tokenized through the plan model's AnswerEncoder (plain text or chat template),
    and the model runs in the plan's evaluation precision (trainables.evaluation.precision).
    `shared`: every rank of the trial calls this together, each running its share of the model's
    batches (trainables.evaluation.over_ranks); the writer gets every row, the other ranks the
    same but for the generation tasks' (only the writer runs their toxicity judge)."""
    tokenizer = encoder_for(plan.model, tokenizer)
    eval_rows: list[dict[str, Any]] = []
    prediction_rows: list[dict[str, Any]] = []
    with scoring(model, plan.eval_precision) as model, over_ranks(shared):
        for entry in plan.eval_tasks:
            name = entry.task
            items = eval_sets[name]
            with timings.phase(EVALUATE, task=name):  # in the stage the caller's phase is in
                timings.count(examples=len(items))
                if get_task(name).kind == "generation":
                    evals, predictions = _generation_rows(plan, model, tokenizer, items)
                else:
                    evals, predictions = _choice_rows(plan, name, entry.modes, model, tokenizer, items)
            head = {"trial_id": plan.trial_id, "stage": -1, "eval_task": name}
            chance = chance_accuracy(items)
            eval_rows.extend({**head, **row, "chance": chance} for row in evals)
            prediction_rows.extend({**head, **row} for row in predictions)
    return eval_rows, prediction_rows


def chance_accuracy(items: list) -> float | None:
    """The accuracy of a uniform guess: the mean of 1 / (number of options) over the items;
    None for items without options (generation prompts) and for an empty set."""
    counts = [len(item.options) for item in items if getattr(item, "options", None)]
    if not counts or len(counts) != len(items):
        return None
    return sum(1 / n for n in counts) / len(counts)


def _choice_rows(plan: TrialPlan, name: str, modes: tuple[str, ...], model: Any, tokenizer: Any,
                 examples: list) -> tuple[list, list]:
    task = get_task(name)
    batch_size = plan.training.eval_batch_size
    max_length = plan.model.max_length
    evals: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    if SCORE_MODE in modes:
        scored = evaluate_examples(model, tokenizer, examples, batch_size=batch_size, max_length=max_length)
        evals.extend(grouped_accuracy_rows(scored, examples))
        if task.extra_metrics is not None:
            evals.extend(task.extra_metrics(examples, scored))
        for example, s in zip(examples, scored):
            role = task.prediction_role(example, s.prediction) if task.prediction_role is not None else None
            predictions.append({
                "example_id": s.example_id, "groups": list(s.groups), "facets": facet_strings(example),
                "label": s.label_name, "prediction": s.prediction_name, "correct": s.correct,
                "margin": s.margin, "mode": SCORE_MODE, "role": role, "generation": None,
            })
    if GENERATE_MODE in modes:
        generation = _generation(plan)
        answers = generated_answers.evaluate_generated(
            model, tokenizer, examples, batch_size=generation.batch_size, max_length=max_length,
            max_new_tokens=generation.answer_max_new_tokens,
        )
        evals.extend(generated_answers.eval_rows(answers))
        predictions.extend(generated_answers.prediction_rows(answers))
    return evals, predictions


def _generation_rows(plan: TrialPlan, model: Any, tokenizer: Any, prompts: list) -> tuple[list, list]:
    from trainables.evaluation.safety import evaluate_generation_safety

    generation = _generation(plan)
    # Fitted once per machine, not once per study (the path is read here, so a changed
    # $STUDY_CACHE_DIR is a new key of the per-process classifier cache below). Only the rank
    # whose rows are kept judges (over_ranks.judges_here).
    classifier = _classifier(generation.classifier, plan.data_dir, str(classifiers_cache())) if judges_here() else None
    return evaluate_generation_safety(
        model, tokenizer, prompts, classifier,
        max_new_tokens=generation.max_new_tokens,
        batch_size=generation.batch_size,
        max_length=plan.model.max_length,
        threshold=generation.threshold,
    )


def _generation(plan: TrialPlan) -> GenerationPlan:
    """The plan's generation settings (the planner gives them to every plan that generates)."""
    if plan.generation is None:
        raise ValueError(f"trial {plan.trial_id}: an evaluation generates text, "
                         "but the plan has no generation settings")
    return plan.generation


@functools.lru_cache(maxsize=4)
def _classifier(name: str, data_dir: str | None, cache_dir: str) -> Any:
    # One classifier per process: a trial evaluates after every stage with the same one.
    from trainables.toxicity.classifier import load_classifier

    return load_classifier(name, data_dir=data_dir, cache_dir=cache_dir)


def facet_strings(item: Any) -> list[str]:
    return [f"{name}={value}" for name, value in getattr(item, "facets", ())]
