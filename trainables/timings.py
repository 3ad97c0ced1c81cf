"""Where a trial's time goes: the recorder behind the `timings` table (contract.schema).

One `Recorder` per trial process, made current by the chain (`recording`), collects the wall
time of named phases (contract.schema.TIMING_PHASES) per (stage, phase, task), with the
examples and tokens each phase processed. The engine's code marks its phases with

    with timings.phase(EVALUATE, task=name):      # stage: the enclosing phase's
        ...
        timings.count(examples=len(items))

which does nothing when no recorder is current (a follower rank, a test calling an evaluator
directly), so the modules that mark phases need no recorder passed in. Phases nest and never
overlap: the time of an inner phase is taken out of the enclosing one, so a trial's rows sum to
its wall time once the OUTSIDE row (wall time minus every phase) is added (`rows`).

`count_fed(trainer)` makes a TRL/transformers trainer count what it is fed into the phase it
trains in (TRAIN, or REWARD_MODEL): examples = the rows and tokens = the non-padding tokens of
every micro-batch its training step receives, summed over the ranks.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from contract.schema import OUTSIDE

_INHERIT: Any = object()
"""A phase's stage when not given: the enclosing phase's (a task is never inherited)."""


@dataclass
class _Totals:
    seconds: float = 0.0
    examples: int | None = None
    tokens: int | None = None

    def add(self, examples: int | None, tokens: int | None) -> None:
        if examples is not None:
            self.examples = (self.examples or 0) + int(examples)
        if tokens is not None:
            self.tokens = (self.tokens or 0) + int(tokens)


@dataclass
class _Open:
    key: tuple[int | None, str, str | None]  # (stage, phase, task)
    started: float
    inner: float = 0.0  # seconds spent in phases nested in this one


@dataclass
class Recorder:
    """One trial's phases. `started`: time.time() when the trial began (its Tune function)."""

    trial_id: str
    run_id: str
    started: float = field(default_factory=time.time)
    totals: dict[tuple[int | None, str, str | None], _Totals] = field(default_factory=dict)
    _open: list[_Open] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str, stage: Any = _INHERIT, task: str | None = None) -> Iterator[None]:
        outer = self._open[-1] if self._open else None
        if stage is _INHERIT:
            stage = outer.key[0] if outer else None
        current = _Open((stage, name, task), time.perf_counter())
        self._open.append(current)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - current.started
            self.totals.setdefault(current.key, _Totals()).seconds += max(0.0, elapsed - current.inner)
            if outer is not None:
                outer.inner += elapsed

    def count(self, *, examples: int | None = None, tokens: int | None = None) -> None:
        """Add to the innermost open phase (nothing when none is open)."""
        if self._open:
            self.totals.setdefault(self._open[-1].key, _Totals()).add(examples, tokens)

    def rows(self) -> list[dict[str, Any]]:
        """The timings rows so far, OUTSIDE (wall time since `started` minus every phase) included."""
        kind, devices = _devices()
        head = {"trial_id": self.trial_id, "run_id": self.run_id, "device_kind": kind, "devices": devices}
        rows = [{**head, "stage": stage, "phase": name, "task": task, "seconds": t.seconds,
                 "examples": t.examples, "tokens": t.tokens}
                for (stage, name, task), t in self.totals.items()]
        inside = sum(t.seconds for t in self.totals.values())
        rows.append({**head, "stage": None, "phase": OUTSIDE, "task": None,
                     "seconds": max(0.0, time.time() - self.started - inside), "examples": None, "tokens": None})
        return rows


_current: Recorder | None = None


def begin(recorder: Recorder | None) -> None:
    """Make `recorder` the process's current one (a trial's chain, on its writer rank), replacing
    the last trial's in a reused process; None: record nothing."""
    global _current
    _current = recorder


def trial_rows() -> list[dict[str, Any]]:
    """The current recorder's rows (Recorder.rows), or none."""
    return _current.rows() if _current is not None else []


@contextlib.contextmanager
def entered(name: str, manager: contextlib.AbstractContextManager) -> Iterator[Any]:
    """`with manager as value`, the time spent entering it (waiting for a lock) recorded as phase `name`."""
    with phase(name):
        value = manager.__enter__()
    try:
        yield value
    except BaseException as exc:
        if not manager.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        manager.__exit__(None, None, None)


def phase(name: str, stage: Any = _INHERIT, task: str | None = None) -> contextlib.AbstractContextManager:
    """The current recorder's phase (the stage defaults to the enclosing phase's), or a no-op."""
    return _current.phase(name, stage, task) if _current is not None else contextlib.nullcontext()


def count(*, examples: int | None = None, tokens: int | None = None) -> None:
    if _current is not None:
        _current.count(examples=examples, tokens=tokens)


def _devices() -> tuple[str, int]:
    import torch

    from trainables import ranks

    if torch.cuda.is_available():
        return "gpu", ranks.world_size()
    return "cpu", ranks.world_size() * torch.get_num_threads()


# -- what a trainer is fed -------------------------------------------------------------------


def batch_tokens(batch: Any) -> int | None:
    """Non-padding tokens of one collated micro-batch: the sum of its attention masks (every key
    naming one: DPO's prompt/chosen/rejected, a reward model's chosen/rejected), or the count of
    its input ids when it has none (a padding-free batch); None for a batch that is not a
    mapping of tensors (online RL hands its step prompts to generate from)."""
    import torch

    if not isinstance(batch, dict) and not hasattr(batch, "keys"):
        return None
    masks = [v for k, v in batch.items() if "attention_mask" in k and isinstance(v, torch.Tensor)]
    if masks:
        return int(sum(int(m.sum()) for m in masks))
    ids = batch.get("input_ids")
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else None


def batch_rows(batch: Any) -> int | None:
    """Examples in one collated micro-batch: the rows of its input ids (DPO's prompt ids, a reward
    model's chosen ids), or, for a padding-free batch (one row of examples laid end to end), the
    sequences its position ids restart at 0; None for a batch that is not a mapping of tensors.
    The last batch of an epoch holds the remainder, so this is not always the batch size."""
    import torch

    if not isinstance(batch, dict) and not hasattr(batch, "keys"):
        return None
    positions = batch.get("position_ids")
    ids = next((batch[k] for k in ("input_ids", "prompt_input_ids", "input_ids_chosen")
                if isinstance(batch.get(k), torch.Tensor)), None)
    if ids is None:
        return None
    if isinstance(positions, torch.Tensor) and ids.dim() == 2 and ids.shape[0] == 1:
        return int((positions == 0).sum())
    return int(ids.shape[0])


def count_fed(trainer: Any) -> None:
    """Make `trainer.train()` count, into the phase it runs in, the examples (`batch_rows`) and
    tokens (`batch_tokens`) of every micro-batch `training_step` receives, summed over the ranks.
    Where a step is handed no mapping of tensors (online RL: prompts to generate from) tokens are
    not counted and examples are optimizer steps × global batch. Every rank of a trial calls this
    on its trainer: the sums over ranks are a collective after training."""
    fed = {"tokens": 0, "rows": 0, "countable": True}
    step = trainer.training_step

    def counting_step(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        tokens, rows = batch_tokens(inputs), batch_rows(inputs)
        if tokens is None or rows is None:
            fed["countable"] = False
        else:
            fed["tokens"] += tokens
            fed["rows"] += rows
        return step(model, inputs, *args, **kwargs)

    train = trainer.train

    def counting_train(*args: Any, **kwargs: Any) -> Any:
        out = train(*args, **kwargs)
        from trainables import ranks

        world = ranks.world_size()
        counted = fed["countable"] and fed["tokens"] > 0
        if world > 1:
            tokens, rows = _sum_over_ranks(trainer, fed["tokens"]), _sum_over_ranks(trainer, fed["rows"])
        else:
            tokens, rows = fed["tokens"], fed["rows"]
        if counted:
            count(examples=rows, tokens=tokens)
        else:
            per_step = int(trainer.args.per_device_train_batch_size) * int(trainer.args.gradient_accumulation_steps) * world
            count(examples=int(trainer.state.global_step) * per_step, tokens=None)
        return out

    trainer.training_step = counting_step
    trainer.train = counting_train


def _sum_over_ranks(trainer: Any, value: int) -> int:
    import torch
    from accelerate.utils import reduce

    tensor = torch.tensor([value], dtype=torch.long, device=trainer.accelerator.device)
    return int(reduce(tensor, reduction="sum").item())



def stage_line(trial_id: str, stage: Any, n_stages: int, *, metrics: dict[str, Any] | None = None,
               seconds: float | None = None) -> str:
    """The line a trial prints when a stage starts (metrics None) or ends: trial, stage, task,
    steps, then at the end its status, wall seconds in this trial and the stage's own task's
    headline metric after it (as the chain reports it, "<task>/<metric>"), e.g.

        [stage] trial tqa_arc-0-1a2b stage 1/2 toxigen_qa (150 steps): start
        [stage] trial tqa_arc-0-1a2b stage 1/2 toxigen_qa (150 steps): finished in 41.2 s, toxigen_qa accuracy 0.873
    """
    head = f"[stage] trial {trial_id} stage {stage.stage}/{n_stages} {stage.task} ({stage.steps} steps)"
    if metrics is None:
        return f"{head}: start"
    text = f"{head}: {metrics.get('status', '?')} in {seconds:.1f} s"
    for key, value in metrics.items():
        task, _, metric = key.partition("/")
        if task == stage.task and metric and isinstance(value, float):
            text += f", {task} {metric} " + ("–" if value != value else f"{value:.3f}")
    return text
