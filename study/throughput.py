"""Tokens per second per GPU, for the GPU-hours of a cost plan: the table, its checks, measured rates.

The table (study/throughput.yaml, or the user's `study plan --throughput FILE`) lists, per GPU
kind and model size, the tokens one GPU trains and scores per second; its file says where each
number comes from. A study's model gets the entry of the GPU kind whose parameter count is
closest, its rates scaled by entry params / model params (the FLOPs of a token grow with the
parameters). `measured(results_dir, ...)` derives an entry from the `timings` table of a
finished study (phases `train` and `evaluate`): tokens / (seconds × the study's
gpus_per_trial), so the rates stay per GPU whatever a trial's GPU count (FileNotFoundError when
the folder has no usable timings).

GPU-hours of a plan: training tokens / train rate, plus scored tokens (evaluation, best-seed
validation) / score rate, plus curvature's HVP tokens × HVP_TRAINING_EQUIVALENTS / train rate,
in hours. Rates are per GPU, so the GPU-hours of a plan do not depend on gpus_per_trial (perfect
scaling assumed); a trial with g GPUs takes 1/g of them in wall-clock time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from contract.problems import FileProblems, Problem, format_path, line_of, read_yaml

DEFAULT_TABLE = Path(__file__).with_name("throughput.yaml")
HVP_TRAINING_EQUIVALENTS = 2.0
"""An HVP over a token costs about two training passes over it (forward, backward with its graph,
and the backward of the gradient-vector product): an assumption, not a measurement."""
TRAIN_PHASE, SCORE_PHASE = "train", "evaluate"


class ThroughputError(FileProblems):
    """Every problem of a throughput file, with its line (`study plan` exits 2)."""


@dataclass(frozen=True)
class Rate:
    gpu: str
    params: float
    train_tokens_per_s: float
    score_tokens_per_s: float
    source: str = ""


@dataclass(frozen=True)
class Table:
    rates: tuple[Rate, ...]
    chars_per_token: float
    model_params: dict[str, int]
    source: str
    date: str

    def kinds(self) -> list[str]:
        return sorted({r.gpu for r in self.rates})

    def rate(self, gpu: str, params: float) -> Rate:
        """The rate of `gpu` for a model of `params` parameters (see the module docstring);
        KeyError naming the kinds there are when the table has no entry of that kind."""
        entries = [r for r in self.rates if r.gpu == gpu]
        if not entries:
            raise KeyError(f"no throughput entry for GPU kind {gpu!r}; the table has {self.kinds()}")
        near = min(entries, key=lambda r: abs(math.log(r.params / params)))
        scale = near.params / params
        return Rate(gpu, params, near.train_tokens_per_s * scale, near.score_tokens_per_s * scale,
                    f"{near.source} (scaled x{scale:.3g} from {near.params:.3g} params)" if scale != 1 else near.source)

    def with_rate(self, rate: Rate) -> "Table":
        return Table(rates=(rate,) + self.rates, chars_per_token=self.chars_per_token, model_params=self.model_params,
                     source=self.source, date=self.date)


_TOP = {"source": str, "date": str, "chars_per_token": (int, float), "model_params": dict, "rates": list}
_RATE = {"gpu": str, "params": (int, float), "train_tokens_per_s": (int, float), "score_tokens_per_s": (int, float),
         "source": str}


def load_table(path: str | Path = DEFAULT_TABLE) -> Table:
    """The throughput table of `path`; ThroughputError listing every problem with its line."""
    import yaml

    path = Path(path)
    try:
        doc = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ThroughputError([Problem("", f"not YAML: {getattr(exc, 'problem', exc)}",
                                       mark.line + 1 if mark else None, str(path))], source=str(path)) from None
    problems: list[Problem] = []

    def problem(keys: tuple, message: str) -> None:
        problems.append(Problem(format_path(keys), message, line_of(keys, doc.lines), str(path)))

    data = doc.data
    if not isinstance(data, dict):
        raise ThroughputError([Problem("", "expected a mapping with 'rates'", 1, str(path))], source=str(path))
    _check_fields(data, _TOP, ("rates", "source", "date"), (), problem)
    rates = []
    for i, entry in enumerate(data.get("rates") or []):
        if not isinstance(entry, dict):
            problem(("rates", i), "expected a mapping (gpu, params, train_tokens_per_s, score_tokens_per_s)")
            continue
        if _check_fields(entry, _RATE, ("gpu", "params", "train_tokens_per_s", "score_tokens_per_s"), ("rates", i),
                         problem):
            rates.append(Rate(entry["gpu"], float(entry["params"]), float(entry["train_tokens_per_s"]),
                              float(entry["score_tokens_per_s"]), entry.get("source", "")))
    if isinstance(data.get("rates"), list) and not data["rates"]:
        problem(("rates",), "no entries")
    params = data.get("model_params") or {}
    for name, count in params.items() if isinstance(params, dict) else ():
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            problem(("model_params", name), f"expected a positive whole number of parameters, got {count!r}")
    if problems:
        raise ThroughputError(problems, source=str(path))
    return Table(rates=tuple(rates), chars_per_token=float(data.get("chars_per_token", 4.0)),
                 model_params=dict(params), source=data["source"], date=str(data["date"]))


def _check_fields(entry: dict, types: dict, required: tuple, at: tuple, problem: Callable) -> bool:
    """Unknown, missing and mistyped fields of one mapping; numbers must be > 0. True when none."""
    from contract.problems import did_you_mean

    ok = True
    for key in entry:
        if key not in types:
            problem(at + (key,), f"unknown field{did_you_mean(key, types)}")
            ok = False
    for key in required:
        if key not in entry:
            problem(at, f"missing field {key!r}")
            ok = False
    for key, kind in types.items():
        if key not in entry:
            continue
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            problem(at + (key,), f"expected {_kind_name(kind)}, got {value!r}")
            ok = False
        elif kind == (int, float) and not value > 0:
            problem(at + (key,), f"must be > 0, got {value!r}")
            ok = False
    return ok


def _kind_name(kind: Any) -> str:
    return {str: "text", dict: "a mapping", list: "a list"}.get(kind, "a number")


# ---------------------------------------------------------------- rates of a finished study


def measured(results_dir: str | Path, *, params: float, gpus_per_trial: float, gpu: str) -> Rate:
    """A rate from a finished study's `timings` table (columns trial_id, run_id, stage, phase,
    task, seconds, examples, tokens): tokens / (seconds × GPUs per trial) of its `train` and
    `evaluate` rows (on a CPU study, gpus_per_trial 0: per trial process). FileNotFoundError
    when it has no timings or a phase has no tokens."""
    import pyarrow.parquet as pq

    folder = Path(results_dir) / "timings"
    parts = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not parts:
        raise FileNotFoundError(f"{results_dir}: no timings table (timings/*.parquet); run the study first")
    sums = {TRAIN_PHASE: [0.0, 0.0], SCORE_PHASE: [0.0, 0.0]}
    for part in parts:
        table = pq.read_table(part, columns=["phase", "seconds", "tokens"]).to_pylist()
        for row in table:
            if row["phase"] in sums and row["tokens"] and row["seconds"]:
                sums[row["phase"]][0] += float(row["tokens"])
                sums[row["phase"]][1] += float(row["seconds"])
    per = gpus_per_trial if gpus_per_trial > 0 else 1
    rates = {}
    for phase, (tokens, seconds) in sums.items():
        if not tokens:
            raise FileNotFoundError(f"{folder}: no '{phase}' rows with tokens and seconds")
        rates[phase] = tokens / (seconds * per)
    return Rate(gpu, params, rates[TRAIN_PHASE], rates[SCORE_PHASE], f"measured in {results_dir}")


# ---------------------------------------------------------------- GPU-hours


@dataclass(frozen=True)
class Hours:
    train: float
    score: float
    curvature: float

    @property
    def total(self) -> float:
        return self.train + self.score + self.curvature


def gpu_hours(cost: Any, rate: Rate) -> Hours:
    """GPU-hours of a cost plan (study.cost_plan.CostPlan) at `rate` (see the module docstring)."""
    train = cost.total("train_tokens") / rate.train_tokens_per_s
    score = (cost.total("scored_tokens") + cost.total("validation_tokens")) / rate.score_tokens_per_s
    curvature = cost.total("hvp_tokens") * HVP_TRAINING_EQUIVALENTS / rate.train_tokens_per_s
    return Hours(train / 3600, score / 3600, curvature / 3600)
