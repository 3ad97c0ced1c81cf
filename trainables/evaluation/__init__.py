"""Measuring a model on the eval tasks after a stage, one module per way of measuring.

- dispatch.py: which evaluator each task and eval mode gets, and each task's headline metric.
- option_scoring.py: multiple-choice by option log-likelihood, scored as trained (accuracy).
- generated_answers.py: the paper's generate-and-parse answers ("The best answer is X").
- safety.py: greedy continuations of prompts, judged by a toxicity classifier (safe %).
- generation.py: batched greedy decoding shared by the two generating evaluators.
"""
