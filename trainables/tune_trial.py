"""The Ray layers of a trial: Tune function → (TorchTrainer →) per-worker chain loop.

Tune schedules one trial per (chain, grid point, seed); its config holds those values, which
map to a precomputed plan. The trial then runs the chain either

- `train`: through a Ray Train `TorchTrainer` whose single worker runs `run_chain` (Train V2;
  metrics reach Tune through `TuneReportCallback`). The path that scales to GPU workers.
- `function`: by calling the same `run_chain` directly inside the Tune trial. On a 2-core
  machine a TorchTrainer per trial costs ~2x the wall time of a plain function trial (extra
  controller and worker actors), so single-CPU-worker chains default to this.

Run names come from trial ids (content hashes), never timestamps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def find_plan(plans: list[dict], config: dict[str, Any]) -> dict:
    """The plan whose chain, seed and grid point equal this Tune config."""
    point = {k: v for k, v in config.items() if k not in ("chain", "seed")}
    for plan in plans:
        if plan["chain"] == config["chain"] and plan["seed"] == config["seed"] and plan["grid_point"] == point:
            return plan
    raise KeyError(f"no trial plan for Tune config {config}")


class PlanLookup:
    """`config -> plan` over precomputed plans (grid studies). A search algorithm that samples
    points (Optuna) passes its own callable that builds the plan from the sampled config."""

    def __init__(self, plans: list[dict]):
        self.plans = plans

    def __call__(self, config: dict[str, Any]) -> dict:
        return find_plan(self.plans, config)


def choose_executor(executor: str, *, workers: int, gpus: float) -> str:
    if executor != "auto":
        return executor
    return "function" if workers == 1 and gpus == 0 else "train"


def chain_trial(config: dict[str, Any], *, plan_for: Callable[[dict[str, Any]], dict], executor: str, cpus_per_worker: float,
                gpus_per_worker: float, max_failures: int) -> None:
    """Tune function trainable. `config` = {chain, seed, <grid axes>...}."""
    from ray import tune

    plan = plan_for(config)
    if executor == "function":
        _limit_threads(cpus_per_worker)
        from trainables.chain import run_chain

        run_chain(plan, report=tune.report, executor="function")
        return

    # Ray Train V2 patches `print` in workers to tee into its logger even while sys.stdout is
    # redirected; `datasets` fingerprinting (through dill) captures dis.dis output that way, so
    # the patch floods the logs with bytecode. It is propagated from here to the workers.
    import os

    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        train_worker_loop,
        train_loop_config={"plan": plan, "cpus": cpus_per_worker},
        scaling_config=ScalingConfig(
            num_workers=1,
            use_gpu=gpus_per_worker > 0,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})},
        ),
        run_config=RunConfig(
            name=plan["trial_id"],
            storage_path=str(Path(plan["study_dir"]) / "_ray_train"),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def train_worker_loop(config: dict[str, Any]) -> None:
    """Ray Train worker entry: the chain loop, reporting with ray.train.report."""
    import ray.train

    from trainables.chain import run_chain

    _limit_threads(config["cpus"])
    run_chain(config["plan"], report=ray.train.report, executor="train")


def _limit_threads(cpus: float) -> None:
    # Two trials on two cores must not each start a thread per core.
    import torch

    torch.set_num_threads(max(1, round(cpus)))
