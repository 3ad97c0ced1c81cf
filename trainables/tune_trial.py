"""The Ray layers of a trial: Tune function → (TorchTrainer →) per-worker chain loop.

Tune schedules one trial per (chain, grid point, seed); its config holds those values, which
map to a precomputed plan. The trial then runs the chain either

- `train`: through a Ray Train `TorchTrainer` whose `workers` workers each run `run_chain` (Train
  V2; metrics reach Tune through `TuneReportCallback`, which forwards rank 0's). With N > 1 workers
  the stages train data-parallel (DDP over the process group Ray Train starts: gloo on CPU, nccl
  on GPUs; FSDP2 on GPUs when asked), see `trainables.distributed`. The path for GPU workers.
- `function`: by calling the same `run_chain` directly inside the Tune trial. On a 2-core
  machine a TorchTrainer per trial costs ~2x the wall time of a plain function trial (extra
  controller and worker actors), so single-CPU-worker chains default to this.

Devices: each worker has one whole GPU (study validation; a shared fraction only with
execution.share_gpus) and runs on it as cuda:LOCAL_RANK (trainables.ranks.model_device); a trial
or worker that asked for no GPU runs with CUDA_VISIBLE_DEVICES="" (`hide_gpus_unless_asked`).

Run names come from trial ids (content hashes), never timestamps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from contract.layout import StudyLayout
from contract.secrets import redacting
from contract.plan import TrialPlan


def find_plan(plans: list[TrialPlan], config: dict[str, Any]) -> TrialPlan:
    """The plan whose chain, seed and grid point equal this Tune config."""
    point = {k: v for k, v in config.items() if k not in ("chain", "seed")}
    for plan in plans:
        if plan.chain == config["chain"] and plan.seed == config["seed"] and plan.grid_point == point:
            return plan
    raise KeyError(f"no trial plan for Tune config {config}")


class PlanLookup:
    """`config -> plan` over precomputed plans (grid studies). A search algorithm that samples
    points (Optuna) passes its own callable that builds the plan from the sampled config."""

    def __init__(self, plans: list[TrialPlan]):
        self.plans = plans

    def __call__(self, config: dict[str, Any]) -> TrialPlan:
        return find_plan(self.plans, config)


def choose_executor(executor: str, *, workers: int, gpus: float) -> str:
    if executor != "auto":
        return executor
    return "function" if workers == 1 and gpus == 0 else "train"


@redacting  # a secret quoted by an exception never reaches Tune's error files (contract.secrets)
def chain_trial(config: dict[str, Any], *, plan_for: Callable[[dict[str, Any]], TrialPlan], executor: str, cpus_per_worker: float,
                gpus_per_worker: float, max_failures: int, workers: int = 1, fsdp: bool = False) -> None:
    """Tune function trainable. `config` = {chain, seed, <grid axes>...}.

    `cpus_per_worker` / `gpus_per_worker` are each worker's share; `workers` > 1 needs the
    `train` executor; `fsdp` shards the model over GPU workers (FSDP2) instead of replicating it.
    """
    import time

    from ray import tune

    started_at = time.time()  # where the trial's timings start (contract.schema.OUTSIDE)
    plan = plan_for(config)
    if not isinstance(fsdp, bool):  # execution.fsdp 'auto' is resolved by study.orchestrate, never passed on
        raise TypeError(f"fsdp must be true or false here (got {fsdp!r})")
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1 (got {workers})")
    if executor == "function" and workers != 1:
        raise ValueError(f"the function executor runs one worker; {workers} workers need executor 'train'")
    if executor == "function":
        hide_gpus_unless_asked(gpus_per_worker)
        _limit_threads(cpus_per_worker)
        from trainables.chain import run_chain

        run_chain(plan, report=tune.report, executor="function", started_at=started_at)
        return

    # Ray Train V2 patches `print` in workers to tee into its logger even while sys.stdout is
    # redirected; `datasets` fingerprinting (through dill) captures dis.dis output that way, so
    # the patch floods the logs with bytecode. It is propagated from here to the workers.
    import os

    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        train_worker_loop,
        train_loop_config={"plan": plan, "cpus": cpus_per_worker, "gpus": gpus_per_worker, "fsdp": bool(fsdp),
                           "started_at": started_at},
        scaling_config=scaling_config(workers=workers, cpus_per_worker=cpus_per_worker,
                                      gpus_per_worker=gpus_per_worker),
        run_config=RunConfig(
            name=plan.trial_id,
            storage_path=str(StudyLayout(Path(plan.study_dir)).ray_train),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def scaling_config(*, workers: int, cpus_per_worker: float, gpus_per_worker: float):
    """N identical workers (one torch process each); with GPUs Ray Train picks nccl, else gloo."""
    from ray.train import ScalingConfig

    return ScalingConfig(
        num_workers=int(workers),
        use_gpu=gpus_per_worker > 0,
        resources_per_worker={"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})},
    )


@redacting
def train_worker_loop(config: dict[str, Any]) -> None:
    """Ray Train worker entry (every rank): the chain loop, reporting with ray.train.report."""
    import os

    import ray.train

    from trainables.chain import run_chain
    from trainables.distributed import FSDP_ENV

    fsdp = config.get("fsdp", False)
    if not isinstance(fsdp, bool):  # 'auto' is resolved by study.orchestrate before any trial starts
        raise TypeError(f"fsdp must be true or false in a worker (got {fsdp!r})")
    hide_gpus_unless_asked(config["gpus"])
    os.environ[FSDP_ENV] = "1" if fsdp else "0"
    _limit_threads(config["cpus"])
    run_chain(config["plan"], report=ray.train.report, executor="train", started_at=config.get("started_at"))


def hide_gpus_unless_asked(gpus: float) -> None:
    """A process that asked Ray for no GPU sees none: CUDA_VISIBLE_DEVICES="" before anything here
    touches CUDA. Ray leaves a node's GPUs visible to a 0-GPU task (it no longer sets the variable
    for zero GPUs: ray-project/ray#54868, Ray 2.60 here), so a CPU trial on a GPU node would
    otherwise put its models on cuda:0 (another trial's GPU) and train in bf16 autocast while its
    stage keys say "cpu". If CUDA was already initialised in this process (the variable is read
    once), the trial is refused rather than run on a GPU it did not ask for."""
    import os

    if gpus > 0:
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    if torch.cuda.is_available():
        raise RuntimeError("this trial asked for no GPU (execution.gpus_per_trial: 0), but CUDA was initialised "
                           "in its process before the GPUs could be hidden")


def _limit_threads(cpus: float) -> None:
    # Two trials (or two workers) on two cores must not each start a thread per core. (accelerate's
    # multi-CPU setup would reset torch's threads to cores / local workers, but only where
    # OMP_NUM_THREADS is unset, and Ray sets it in every worker.)
    import torch

    torch.set_num_threads(max(1, round(cpus)))
