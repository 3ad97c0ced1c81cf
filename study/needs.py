"""What a study needs before it runs: the "needs" block `study validate` and `study run` print,
and the hardware refusal of `study run`.

The block says, in a few lines, what a researcher must have before a run can succeed:

- the model's parameter count, from its config on the meta device (no weights: the memory
  model's count, trainables/memory_model.py), or one line saying the config could not be read;
- the memory of one trial: the memory model's largest step at the settings the trials run with
  (FSDP and activation checkpointing as `auto` resolved, the workers, the dtype, DPO's and the
  online-RL methods' extra models), per GPU for a GPU study, host RAM per worker for a CPU one;
- whether the model is gated on the Hugging Face Hub, and the one command that logs in: asked of
  the Hub (`huggingface_hub.model_info(...).gated`) when it answers, else judged from
  `KNOWN_GATED_PREFIXES`;
- the trials, the stage trainings after sharing and the evaluated examples: the cost plan's
  counts (study.cost_plan, the ones `study plan` prints).

`study run` refuses to start (exit 2, nothing written) a study whose largest step does not fit
`execution.gpu_memory_gb` (the memory preflight's problems, trainables/memory_preflight.py) or
that would fine-tune a model above `CPU_FINE_TUNE_LIMIT` parameters on CPU, unless `--force`;
the refusal says what to change. `study validate` prints the same block and says what `study
run` would refuse.

This module gathers nothing that needs a model: study.orchestrate.study_needs reads the memory
model and the cost plan and hands the numbers here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from contract.problems import Problem

CPU_FINE_TUNE_LIMIT = 1_000_000_000
"""Parameters above which fine-tuning on CPU is refused: a CPU step of a 1B model takes minutes,
and a paper-sized study (thousands of steps) would take months."""

KNOWN_GATED_PREFIXES = ("meta-llama/", "google/gemma", "mistralai/")
"""Hub ids whose repositories ask users to accept a license before downloading (Llama, Gemma,
Mistral), used when the Hub cannot be asked (offline, HF_HUB_OFFLINE=1)."""


@dataclass(frozen=True)
class Gated:
    gated: bool | None
    """True, False, or None: a local model, which no Hub gates."""
    source: str
    """How it was judged: 'the Hub', 'known gated prefixes', 'a local model'."""


def login_command() -> str:
    """The command the installed huggingface_hub provides to log in: `hf auth login` from
    version 1 on (which dropped `huggingface-cli`), `huggingface-cli login` before."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("huggingface_hub").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return "hf auth login"
    return "hf auth login" if major >= 1 else "huggingface-cli login"


def _hub_gated(name: str) -> bool:
    from huggingface_hub import model_info

    return bool(model_info(name, timeout=5).gated)  # False, or 'auto' / 'manual'


def gated_on_hub(name: str, *, ask_hub: Callable[[str], bool] | None = None) -> Gated:
    """Whether model `name` is gated on the Hub (see the module docstring); `ask_hub` replaces
    the Hub query (tests)."""
    if name == "tiny" or Path(name).exists():
        return Gated(None, "a local model")
    try:
        return Gated((ask_hub or _hub_gated)(name), "the Hub")
    except Exception:  # noqa: BLE001 - unreachable, offline mode, an unknown id: judge by name
        return Gated(name.startswith(KNOWN_GATED_PREFIXES), "known gated prefixes")


@dataclass(frozen=True)
class Needs:
    """What a study needs (gathered by study.orchestrate.study_needs)."""

    model: str
    on_gpu: bool
    gpus_per_trial: float
    gpu_memory_gb: float
    params: int | None = None
    memory: Any = None
    """trainables.memory_preflight.TrialMemory, or None when the config could not be read."""
    config_note: str = ""
    """Why the config could not be read."""
    gated: Gated | None = None
    trials: str = ""
    """'4 trials', 'up to 20 trials'."""
    cost: Any = None
    """The cost plan (study.cost_plan.CostPlan), or None: `counts_note` says why."""
    counts_note: str = ""
    fsdp: bool = False
    workers: int = 1


def trial_count(spec: Any) -> str:
    """'4 trials' (a grid: chains x seeds x grid points), 'up to 20 trials' (an Optuna search)."""
    n = len(spec.chains) * len(spec.seeds)
    if spec.search is not None:
        return f"up to {n * spec.search.num_samples} trials"
    for values in spec.grid.values():
        n *= len(values)
    return f"{n} trial{'s' if n != 1 else ''}"


_EXTRA = {"dpo": "reference model", "rloo": "reference and reward models",
          "ppo": "reference, reward and value models"}


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}" if n >= 1e8 else f"{n / 1e9:.2g}"


def memory_line(needs: Needs) -> str:
    m = needs.memory
    b = m.breakdown
    parts = [("weights", b.weights), ("grads", b.grads), ("AdamW states", b.optimizer),
             (_EXTRA.get(m.method, "extra models"), b.extra_models), ("activations", b.activations)]
    shown = ", ".join(f"{label} {_gb(size)}" for label, size in parts if size > 0)
    if needs.on_gpu:
        how = f"{needs.workers} worker{'s' if needs.workers != 1 else ''}" + (", FSDP" if needs.fsdp else "")
        return (f"per trial: {_gb(b.total)} GB per GPU at the largest step ({m.path}: {m.method}, {how}; {shown} GB; "
                f"peak at the {b.peak_phase}); the GPUs have {needs.gpu_memory_gb:g} GB (execution.gpu_memory_gb)")
    return f"per trial: {_gb(b.host_ram)} GB of RAM per CPU worker at the largest step ({m.path}: {m.method}; {shown} GB)"


def render_needs(needs: Needs) -> list[str]:
    """The needs block: a few lines, each starting with 'needs:'."""
    lines = []
    if needs.params is not None:
        count = f"{needs.params:,} parameters" + (f" ({needs.params / 1e9:.2f}B)" if needs.params >= 1e8 else "")
        source = "" if needs.memory is not None else " (the published count: study/throughput.yaml)"
        lines.append(f"model: {needs.model}, {count}{source}")
    else:
        lines.append(f"model: {needs.model}, parameters not counted: {needs.config_note}")
    if needs.memory is not None:
        lines.append(memory_line(needs))
    else:
        lines.append(f"per trial: not estimated: {needs.config_note}")
    g = needs.gated
    if g is not None and g.gated:
        lines.append(f"access: gated on the Hugging Face Hub ({g.source}): accept its license at "
                     f"https://huggingface.co/{needs.model}, then log in: {login_command()}")
    elif g is not None and g.gated is False:
        lines.append(f"access: not gated ({g.source})")
    if needs.cost is not None:
        c = needs.cost
        lines.append(f"work: {needs.trials}, {len(c.trainings)} stage trainings after sharing "
                     f"({c.stage_trainings_naive} in the chains), {c.total('eval_examples'):,.0f} evaluated examples")
    else:
        lines.append(f"work: {needs.trials}" + (f"; {needs.counts_note}" if needs.counts_note else ""))
    return [f"needs: {line}" for line in lines]


RUN_CHANGES = ("--set model=tiny (the built-in tiny model, on CPU), more GPUs (--set execution.gpus_per_trial=N "
               "with execution.workers_per_trial=N and execution.fsdp=true), or the real size of your GPUs "
               "(execution.gpu_memory_gb); `study run --force` starts it anyway")


def cpu_problem(needs: Needs) -> Problem | None:
    """A CPU study fine-tuning a model above CPU_FINE_TUNE_LIMIT parameters, or None."""
    if needs.on_gpu or needs.params is None or needs.params <= CPU_FINE_TUNE_LIMIT:
        return None
    return Problem("execution.gpus_per_trial",
                   f"0: fine-tuning {needs.model} ({needs.params / 1e9:.2f}B parameters, over "
                   f"{CPU_FINE_TUNE_LIMIT / 1e9:g}B) on CPU would take weeks; give each trial GPUs "
                   f"(--set execution.gpus_per_trial=1, or N with execution.workers_per_trial=N and "
                   f"execution.fsdp=true) or use --set model=tiny; `study run --force` starts it anyway")


def refusal(needs: Needs, memory_problems: list[Problem]) -> list[Problem]:
    """What `study run` refuses without --force: the memory preflight's problems (a step over the
    GPUs' memory, with what would fit), then what to change; a >1B model fine-tuned on CPU."""
    problems = list(memory_problems)
    if problems:
        problems.append(Problem("", f"or change: {RUN_CHANGES}"))
    cpu = cpu_problem(needs)
    return problems + ([cpu] if cpu is not None else [])
