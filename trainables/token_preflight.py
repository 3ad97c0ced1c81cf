"""What the model will see: the tokenization preflight of a study, before any training.

For every task a study trains or evaluates, the examples it will use go through the one
tokenization seam (trainables.tokenization), and the preflight reports:

- errors (the study cannot be scored as trained; `study run` and `study validate --show-tokens`
  stop with exit code 2 before anything trains): an option with no tokens of its own, a chat
  template asked for but missing or one that renders the answer elsewhere, a task whose every
  example is longer than model.max_length;
- warnings: options the tokenizer encodes differently on their own than after the context (the
  engine scores the in-context tokens; tools that encode options alone score others), and
  training or evaluation sequences longer than max_length for more than a few percent of a
  task's examples (training drops them, evaluation cuts their context from the left);
- for `--show-tokens`, one example of each task as the model reads it: the rendered text before
  the answer, each option's scored tokens (as token strings) and the tokens the training loss
  covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from contract.problems import TokenizationError
from trainables.tokenization import AnswerEncoder, Encoded, chat_messages, resolve_chat_template

OVER_LENGTH_WARN_SHARE = 0.02
"""Warn when more than this share of a task's examples is longer than max_length."""
MAX_ERRORS_PER_TASK = 5


@dataclass
class TaskTokens:
    task: str
    splits: list[str]
    n_examples: int
    n_over_length: int = 0
    longest: int = 0
    shown: list[str] = field(default_factory=list)  # the rendered example, line by line
    alone_differs: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # option -> (alone, in context)
    errors: list[str] = field(default_factory=list)


@dataclass
class PreflightReport:
    header: list[str]
    tasks: list[TaskTokens]
    errors: list[str]
    warnings: list[str]

    def error_message(self) -> str:
        return "the study cannot be scored as trained:\n" + "\n".join(f"  - {e}" for e in self.errors)

    def render(self, *, show_tokens: bool = True, errors: bool = True) -> str:
        lines = list(self.header)
        if show_tokens:
            for t in self.tasks:
                lines.append("")
                lines.append(f"task {t.task} ({', '.join(t.splits)}): {t.n_examples} examples, longest training "
                             f"sequence {t.longest} tokens, {t.n_over_length} over max_length")
                lines.extend(f"  {line}" for line in t.shown)
        for title, items in (("warnings", self.warnings), ("errors", self.errors if errors else [])):
            if items:
                lines.append("")
                lines.append(f"{title}:")
                lines.extend(f"  - {item}" for item in items)
        return "\n".join(lines)


def _tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]


def _clip(text: str, keep: int = 160) -> str:
    """A long rendered prompt shown by its start and its end (what the answer follows)."""
    if len(text) <= 2 * keep:
        return repr(text)
    return f"{text[:keep]!r} … {text[-keep:]!r}"


def _encode_checked(encoder: AnswerEncoder, examples: Sequence[Any], task: str, errors: list[str]) -> list[list[Encoded] | None]:
    """Encoded options per example; an example that cannot be encoded is None and its problem
    goes to `errors` (at most MAX_ERRORS_PER_TASK per task, then a count)."""
    try:
        return list(encoder.encode(examples))
    except TokenizationError:
        pass  # find every bad example, one at a time
    out: list[list[Encoded] | None] = []
    bad = 0
    for ex in examples:
        try:
            out.append(encoder.encode([ex])[0])
        except TokenizationError as exc:
            out.append(None)
            bad += 1
            if bad <= MAX_ERRORS_PER_TASK:
                errors.append(f"task {task}: {exc}")
    if bad > MAX_ERRORS_PER_TASK:
        errors.append(f"task {task}: {bad - MAX_ERRORS_PER_TASK} more examples cannot be encoded")
    return out


CHAT_CHECKED_EXAMPLES = 20


def _conversational_mismatches(encoder: AnswerEncoder, task: str, examples: Sequence[Any],
                               encoded: Sequence[list[Encoded] | None]) -> list[str]:
    """SFT on a chat model trains on TRL's own rendering of the conversation (prompt with the
    generation prompt, then prompt + answer, each through `apply_chat_template(tokenize=True)`);
    the stage refuses to train when that differs from the seam. Checked here first, on the first
    examples of the task, so `study run` stops before anything trains."""
    tok = encoder.tokenizer
    for ex, per in list(zip(examples, encoded))[:CHAT_CHECKED_EXAMPLES]:
        if per is None:
            continue
        messages = chat_messages(ex.prompt, ex.completion)
        prompt_ids = tok.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True,
                                             return_dict=True)["input_ids"]
        full_ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        enc = per[ex.label]
        if list(full_ids) != list(enc.ids) or len(prompt_ids) != enc.loss_start:
            return [f"task {task}: {ex.example_id}: TRL's conversational tokenization of the chat template differs "
                    f"from the scoring seam ({len(full_ids)} tokens, loss from {len(prompt_ids)}; seam: {len(enc.ids)}, "
                    f"loss from {enc.loss_start}); set model.chat_template: false"]
    return []


def inspect_task(encoder: AnswerEncoder, task: str, splits: list[str], examples: Sequence[Any], max_length: int,
                 n_train: int = 0) -> TaskTokens:
    """Tokenization facts of one task's examples (multiple-choice Examples or GenerationPrompts);
    the first `n_train` are a stage's training examples."""
    tok = encoder.tokenizer
    report = TaskTokens(task=task, splits=splits, n_examples=len(examples))
    if not examples:
        return report
    if not hasattr(examples[0], "options"):  # free generation: only the prompt is read
        encoded_prompts = encoder.prompt_ids([ex.prompt for ex in examples])
        report.longest = max(len(ids) for ids in encoded_prompts)
        report.n_over_length = sum(len(ids) > max_length for ids in encoded_prompts)
        first = examples[0]
        report.shown = [f"example {first.example_id} (generation prompt):",
                        f"  model reads: {_clip(encoder.prompt_text(first.prompt))}",
                        f"  tokens: {len(encoded_prompts[0])}"]
        return report
    encoded = _encode_checked(encoder, examples, task, report.errors)
    lengths = [max(len(enc.ids) for enc in per) for per in encoded if per]
    context_lengths = [min(len(enc.context_ids) for enc in per) for per in encoded if per]
    report.longest = max(lengths, default=0)
    report.n_over_length = sum(n > max_length for n in lengths)
    if context_lengths and min(context_lengths) >= max_length:
        report.errors.append(f"task {task}: the context before the answer is at least max_length={max_length} tokens "
                             f"for every one of its {len(context_lengths)} examples (shortest: {min(context_lengths)}); "
                             "raise model.max_length")
    trained = [per[ex.label] for ex, per in zip(examples[:n_train], encoded[:n_train]) if per is not None]
    if trained and all(len(enc.ids) > max_length for enc in trained):
        report.errors.append(f"task {task}: no training example fits in max_length={max_length} tokens (shortest "
                             f"training sequence: {min(len(enc.ids) for enc in trained)}); raise model.max_length")
    # Options encoded alone vs. in context: one check per distinct option text (first example that has it).
    for ex, per in zip(examples, encoded):
        if per is None:
            continue
        for option, enc in zip(ex.options, per):
            if option in report.alone_differs or option.strip() == "":
                continue
            alone = list(tok(option, add_special_tokens=False)["input_ids"])
            if alone != list(enc.answer_ids):
                report.alone_differs[option] = (_tokens(tok, alone), _tokens(tok, enc.answer_ids))
    if encoder.chat:
        report.errors.extend(_conversational_mismatches(encoder, task, examples, encoded))
    shown = next(((ex, per) for ex, per in zip(examples, encoded) if per is not None), None)
    if shown is not None:
        ex, per = shown
        label_enc = per[ex.label]
        report.shown = [f"example {ex.example_id}:",
                        f"  model reads: {_clip(tok.decode(list(label_enc.context_ids)))}",
                        "  scored tokens per option:"]
        for i, (name, enc) in enumerate(zip(ex.option_names, per)):
            mark = "  (correct)" if i == ex.label else ""
            report.shown.append(f"    {name!r:14} {_tokens(tok, enc.answer_ids)}{mark}")
        report.shown.append(f"  training loss on: {_tokens(tok, label_enc.loss_ids)}")
    return report


def study_examples(spec: Any, data_dir: str | None) -> dict[str, tuple[list[str], list[Any], int]]:
    """task -> (splits, examples, n_train) a study uses: each stage task's training examples (the
    first n_train examples: under seed_scope 'order_and_data' every example of the seeds'
    subsamples, once) and each evaluated task's eval set, drawn as trials draw them."""
    from tasks import load_examples

    out: dict[str, tuple[list[str], list[Any], int]] = {}
    for task in dict.fromkeys(stage.task for stages in spec.chains.values() for stage in stages):
        settings = spec.task_settings(task)
        train = {ex.example_id: ex
                 for seed in spec.train_data_seeds(task)
                 for ex in load_examples(task, "train", size=settings.train_size, data_dir=data_dir, data_seed=seed,
                                         limit=settings.limit, option_counts=settings.option_counts,
                                         bad_rows=spec.data.bad_rows)}
        out[task] = (["train"], list(train.values()), len(train))
    for task in spec.all_eval_tasks():
        settings = spec.task_settings(task)
        examples = load_examples(task, "eval", size=settings.eval_size, data_dir=data_dir, data_seed=spec.data_seed,
                                 limit=settings.limit, option_counts=settings.option_counts,
                                 bad_rows=spec.data.bad_rows)
        splits, known, n_train = out.get(task, ([], [], 0))
        out[task] = (splits + ["eval"], known + examples, n_train)
    return out


def preflight(spec: Any, model_path: str, data_dir: str | None) -> PreflightReport:
    """The tokenization preflight of a study spec (study.spec.StudySpec) with its base model at
    `model_path` (see the module docstring). Problems are the report's errors, not exceptions."""
    from trainables.models import load_tokenizer

    try:
        tokenizer = load_tokenizer(str(model_path), trust_remote_code=spec.model.trust_remote_code)
    except (OSError, ValueError) as exc:  # no tokenizer files, an unknown class, remote code refused
        return PreflightReport(header=[f"model: {spec.model.name}"], tasks=[], warnings=[],
                               errors=[f"cannot load the tokenizer of {model_path}: {exc}"])
    try:
        chat = resolve_chat_template(spec.model.chat_template, spec.model.name, tokenizer)
    except TokenizationError as exc:
        return PreflightReport(header=[f"model: {spec.model.name}"], tasks=[], errors=[str(exc)], warnings=[])
    encoder = AnswerEncoder(tokenizer, chat=chat)
    max_length = spec.model.max_length
    bos = _tokens(tokenizer, encoder.head) if encoder.head else "none"
    header = [f"model: {spec.model.name} ({model_path})",
              f"tokenizer: {type(tokenizer).__name__}, vocabulary {len(tokenizer)}, BOS added: {bos}, "
              f"EOS: {tokenizer.eos_token!r}",
              f"prompt format: {'chat template' if chat else 'plain text'} "
              f"(model.chat_template: {str(spec.model.chat_template).lower()}); max_length {max_length}"]
    tasks, errors, warnings = [], [], []
    for task, (splits, examples, n_train) in study_examples(spec, data_dir).items():
        try:
            facts = inspect_task(encoder, task, splits, examples, max_length, n_train)
        except TokenizationError as exc:  # e.g. a chat template that renders the answer elsewhere
            errors.append(f"task {task}: {exc}")
            continue
        tasks.append(facts)
        errors.extend(facts.errors)
        for option, (alone, in_context) in facts.alone_differs.items():
            warnings.append(f"task {task}: option {option!r} encodes as {alone} on its own but as {in_context} "
                            "after the context; the engine scores the in-context tokens (as trained)")
        if facts.n_examples and facts.n_over_length > OVER_LENGTH_WARN_SHARE * facts.n_examples:
            warnings.append(f"task {task}: {facts.n_over_length} of {facts.n_examples} examples are longer than "
                            f"max_length={max_length} tokens (training drops them, evaluation cuts their context "
                            "from the left); raise model.max_length")
    return PreflightReport(header=header, tasks=tasks, errors=errors, warnings=warnings)
