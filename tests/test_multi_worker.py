"""Multi-worker chains: a stage trained data-parallel by 2 Ray Train workers (DDP over gloo) takes
the same optimizer steps on the same examples as one worker, and ends with the same weights.

Fast tier: the rank helpers in one process and the training arguments for 1 and N workers.
Slow tier: a real TorchTrainer (2 workers) on the local 2-CPU Ray cluster running our SFT stage
runner on the tiny model, against the same stage run directly in this process; and a whole study
with workers_per_trial 2 (executor "train") against the same study on one function worker.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from contract.plan import TrainingPlan
from tests.plans import model_plan, stage_plan

TRAINING = TrainingPlan.from_dict({"adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 0.1, "lr_scheduler": "cosine",
                                    "warmup_steps": 0, "max_grad_norm": 1.0, "eval_batch_size": 8})
# 64 examples, global batch 16, 8 steps: two epochs, so the reshuffle at the epoch boundary is
# covered too. lr 3e-3 moves the tiny model's weights by ~1e-2 (see the assertions).
STAGE = {"method": "sft", "learning_rate": 3e-3, "batch_size": 16, "steps": 8, "seed": 0}
N_EXAMPLES = 64
MAX_LENGTH = 256

_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "STUDY_FSDP")


@pytest.fixture
def single_process(monkeypatch):
    """No torchrun/Ray Train variables: the plain `function`-executor process."""
    for name in _DIST_ENV:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- fast tier: one process


def test_rank_helpers_in_one_process(single_process, tiny_model_path, tmp_path):
    from trainables import distributed, ranks
    from trainables.models import load_model_and_tokenizer

    assert not torch.distributed.is_initialized()
    assert (ranks.world_size(), ranks.rank(), ranks.local_rank()) == (1, 0, 0)
    assert ranks.is_writer()
    distributed.barrier()  # no process group and one rank: returns at once
    assert distributed.broadcast_from_writer({"skip": True}) == {"skip": True}

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    assert not distributed.is_sharded(model)
    out = distributed.save_stage_checkpoint(model, tokenizer, tmp_path / "stage1")
    reloaded, _ = load_model_and_tokenizer(str(out), dtype="float32")
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_env_world_size_without_a_process_group_is_an_error_at_a_barrier(single_process, monkeypatch):
    """WORLD_SIZE > 1 but no process group: a barrier must fail loudly, not pass silently."""
    from trainables import distributed, ranks

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert (ranks.world_size(), ranks.rank(), ranks.is_writer()) == (2, 1, False)
    with pytest.raises(RuntimeError, match="no torch process group"):
        distributed.barrier()


def test_global_batch_is_split_over_workers():
    from contract.workers import batch_size_problem, per_device_batch_size

    assert per_device_batch_size(16, 1) == 16
    assert per_device_batch_size(16, 2) == 8
    assert per_device_batch_size(16, 16) == 1
    assert batch_size_problem(16, 4) is None
    with pytest.raises(ValueError, match="batch_size 15 is the global batch and must be divisible by"):
        per_device_batch_size(15, 2)
    assert "must be ≥ 1" in batch_size_problem(16, 0)


def test_one_worker_training_arguments_are_unchanged(single_process, tmp_path):
    from trainables.stages.training_args import common_training_kwargs

    kwargs = common_training_kwargs(schedule=stage_plan(STAGE), seed=STAGE["seed"], training=TRAINING,
                                    work_dir=str(tmp_path), model_dtype="float32")
    assert kwargs["per_device_train_batch_size"] == 16
    assert not any(k.startswith(("ddp_", "fsdp")) for k in kwargs)


def test_two_worker_training_arguments(single_process, monkeypatch, tmp_path):
    from transformers import TrainingArguments

    from trainables.stages.training_args import common_training_kwargs

    monkeypatch.setenv("WORLD_SIZE", "2")
    kwargs = common_training_kwargs(schedule=stage_plan(STAGE), seed=STAGE["seed"], training=TRAINING,
                                    work_dir=str(tmp_path), model_dtype="float32")
    assert kwargs["per_device_train_batch_size"] == 8
    assert kwargs["ddp_backend"] == "gloo" and kwargs["ddp_find_unused_parameters"] is False
    assert "fsdp" not in kwargs
    # Every key is a real TrainingArguments field (a typo would be a TypeError here).
    fields = set(TrainingArguments.__dataclass_fields__)
    assert set(kwargs) <= fields
    with pytest.raises(ValueError, match="divisible"):
        common_training_kwargs(schedule=stage_plan({**STAGE, "batch_size": 15}), seed=STAGE["seed"], training=TRAINING,
                               work_dir=str(tmp_path), model_dtype="float32")


def test_fsdp_kwargs_only_for_gpu_workers(single_process, monkeypatch):
    """The FSDP path can only be built here, not run (no GPUs): its settings and its refusal on CPU."""
    from transformers import TrainingArguments

    from trainables.distributed import FSDP_ENV, parallel_training_kwargs

    assert parallel_training_kwargs(workers=2, on_gpu=True) == {"ddp_backend": "nccl",
                                                               "ddp_find_unused_parameters": False}
    monkeypatch.setenv(FSDP_ENV, "1")
    assert parallel_training_kwargs(workers=1, on_gpu=True) == {}
    fsdp = parallel_training_kwargs(workers=2, on_gpu=True)
    assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["version"] == 2
    assert fsdp["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"
    assert set(fsdp) <= set(TrainingArguments.__dataclass_fields__)
    with pytest.raises(ValueError, match="FSDP needs GPU workers"):
        parallel_training_kwargs(workers=2, on_gpu=False)


def test_function_executor_refuses_several_workers():
    from trainables.tune_trial import chain_trial

    with pytest.raises(ValueError, match="need executor 'train'"):
        chain_trial({"chain": "c", "seed": 0}, plan_for=lambda config: {}, executor="function", cpus_per_worker=1,
                    gpus_per_worker=0, max_failures=0, workers=2)


def test_scaling_config_for_n_workers():
    from trainables.tune_trial import scaling_config

    cpu = scaling_config(workers=2, cpus_per_worker=0.5, gpus_per_worker=0)
    assert (cpu.num_workers, cpu.use_gpu, cpu.resources_per_worker) == (2, False, {"CPU": 0.5})
    gpu = scaling_config(workers=4, cpus_per_worker=2, gpus_per_worker=1)
    assert (gpu.num_workers, gpu.use_gpu, gpu.resources_per_worker) == (4, True, {"CPU": 2, "GPU": 1})


# ---------------------------------------------------------------- slow tier: Ray Train workers


def _record_batches(model):
    """A forward pre-hook that records, per forward call, each row's unpadded token ids."""
    batches: list[list[list[int]]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        rows = []
        for i in range(ids.shape[0]):
            row = ids[i][mask[i].bool()] if mask is not None else ids[i]
            rows.append(row.tolist())
        batches.append(rows)

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    return batches, handle


def run_sft_stage(model_path: str, data_dir: str, out_dir: Path, *, threads: int, stage: dict = STAGE,
                  n_examples: int = N_EXAMPLES) -> dict:
    """The stage under test, as one rank runs it: load, train (our SFT runner), save on rank 0.

    Returns (and writes to out_dir/rank<r>.json) what the rank observed.
    """
    from trainables import distributed, ranks
    from trainables.models import load_model_and_tokenizer
    from trainables.stages import get_runner
    from tasks import load_examples

    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    me = ranks.rank()
    model, tokenizer = load_model_and_tokenizer(model_path, dtype="float32")
    examples = load_examples("toxigen_qa", "train", size=n_examples, data_dir=data_dir)
    batches, handle = _record_batches(model)
    start = time.perf_counter()
    outcome = get_runner("sft")(model=model, tokenizer=tokenizer, stage=stage_plan(stage), examples=examples,
                                training=TRAINING, model_plan=model_plan(model_path, max_length=MAX_LENGTH),
                                work_dir=str(out_dir / "work"))
    seconds = time.perf_counter() - start
    handle.remove()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out_dir / f"rank{me}.pt")
    checkpoint = distributed.save_stage_checkpoint(model, tokenizer, out_dir / "checkpoint")
    # After the barrier every rank finds rank 0's checkpoint and loads the same weights it holds.
    reloaded, _ = load_model_and_tokenizer(str(checkpoint), dtype="float32")
    reload_diff = max((a - b).abs().max().item()
                      for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    record = {
        "rank": me, "world_size": ranks.world_size(), "is_writer": ranks.is_writer(),
        "process_group": torch.distributed.is_initialized(),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "threads": torch.get_num_threads(), "stage_seconds": seconds, "n_examples": outcome.n_examples,
        "losses": [row["loss"] for row in outcome.log_rows], "steps": [row["step"] for row in outcome.log_rows],
        "grad_norms": [row["grad_norm"] for row in outcome.log_rows],
        "batches": batches, "reload_max_abs_diff": reload_diff,
    }
    (out_dir / f"rank{me}.json").write_text(json.dumps(record))
    return record


def _worker_loop(config: dict) -> None:
    """What the chain does on every rank: rank 0 leads (the stage's training, a report), the
    other ranks follow its commands until it releases them."""
    import ray.train

    from trainables import distributed, ranks

    def train() -> dict:
        return run_sft_stage(config["model_path"], config["data_dir"], Path(config["out_dir"]),
                             threads=config["threads"], stage=config["stage"], n_examples=config["n_examples"])

    if not ranks.is_writer():
        ran = distributed.follow({"train": train, "report": lambda: ray.train.report({})})
        (Path(config["out_dir"]) / f"follower{ranks.rank()}.json").write_text(json.dumps({"commands": ran}))
        return
    report = distributed.leading_report(ray.train.report)
    try:
        distributed.lead("train")
        record = train()
        report({"final_loss": record["losses"][-1], "rank": ranks.rank()})
    finally:
        distributed.release_followers()


def _report_recorder(path: Path):
    """A Ray Train callback (it runs in the Train controller) that appends every report's
    per-rank metrics to `path` as a JSON line: what TuneReportCallback gets (it forwards rank 0's)."""
    from ray.train import UserCallback

    class _Recorder(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as handle:
                handle.write(json.dumps(metrics) + "\n")

    return _Recorder()


def _fit(workers: int, cpus_per_worker: float, model_path, data_dir, out_dir: Path, *, stage: dict = STAGE,
         n_examples: int = N_EXAMPLES):
    """Run the stage on `workers` Ray Train workers; (fit wall seconds, per-rank metrics of each report)."""
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from trainables.tune_trial import scaling_config

    out_dir.mkdir(parents=True)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"model_path": str(model_path), "data_dir": str(data_dir), "out_dir": str(out_dir),
                           "threads": max(1, round(cpus_per_worker)), "stage": stage, "n_examples": n_examples},
        scaling_config=scaling_config(workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=0),
        run_config=RunConfig(name=f"sft-{out_dir.name}", storage_path=str(out_dir.parent / "_ray_train"),
                             callbacks=[_report_recorder(out_dir / "reports.jsonl")]),
    )
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    reports = [json.loads(line) for line in (out_dir / "reports.jsonl").read_text().splitlines()]
    return seconds, reports


def _load_ranks(out_dir: Path, workers: int) -> list[dict]:
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(workers)]


def _max_abs_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
def test_two_workers_train_a_stage_data_parallel_like_one(ray_cluster, tiny_model_path, data_dir, tmp_path,
                                                          monkeypatch):
    from trainables.models import load_model_and_tokenizer

    monkeypatch.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    for name in _DIST_ENV:
        monkeypatch.delenv(name, raising=False)

    # The reference: the stage in this process (no process group), 2 threads like the 1-worker trainer below.
    untrained = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")[0].state_dict()
    threads_before = torch.get_num_threads()
    try:
        reference = run_sft_stage(str(tiny_model_path), str(data_dir), tmp_path / "process", threads=2)
    finally:
        torch.set_num_threads(threads_before)
    # (One worker through TorchTrainer is the single-rank case of the same code; the study test
    # below and test_e2e_study run it, so it is not fitted again here.)
    two_seconds, two_reports = _fit(2, 1.0, tiny_model_path, data_dir, tmp_path / "two")
    two = _load_ranks(tmp_path / "two", 2)

    # Rank 1 ran exactly rank 0's two commands (train, report) and returned on its release;
    # one report reached Ray Train with rank 0's metrics first (the ones Tune keeps).
    assert json.loads((tmp_path / "two" / "follower1.json").read_text()) == {"commands": 2}
    assert two_reports == [[{"final_loss": two[0]["losses"][-1], "rank": 0}, {}]]

    # Really two ranks in one gloo process group, rank 0 the only writer.
    assert [(r["rank"], r["world_size"], r["is_writer"], r["backend"]) for r in two] == \
        [(0, 2, True, "gloo"), (1, 2, False, "gloo")]
    assert (reference["world_size"], reference["process_group"]) == (1, False)

    # Each rank ran one forward per optimizer step on half of the global batch of 16 ...
    for record in two:
        assert record["steps"] == list(range(1, STAGE["steps"] + 1))
        assert [len(batch) for batch in record["batches"]] == [8] * STAGE["steps"]
    assert [len(batch) for batch in reference["batches"]] == [16] * STAGE["steps"]
    # ... the two halves are disjoint and together are exactly the one-process batch of that step.
    for step, (half0, half1, whole) in enumerate(zip(two[0]["batches"], two[1]["batches"], reference["batches"])):
        assert not {tuple(r) for r in half0} & {tuple(r) for r in half1}, step
        assert sorted(half0 + half1) == sorted(whole), f"step {step + 1}: global batch differs"

    # Gradients were all-reduced: both ranks hold bitwise the same weights after 8 steps on
    # different halves (without DDP each rank would have fitted its own half).
    rank0 = torch.load(tmp_path / "two" / "rank0.pt")
    rank1 = torch.load(tmp_path / "two" / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # Rank 1 loaded rank 0's checkpoint after the barrier: the same weights it holds.
    assert [r["reload_max_abs_diff"] for r in two] == [0.0, 0.0]

    # Same result as one process, up to float32 summation order. The 2-worker gradient is the
    # all-reduced sum of two half-batch gradients (each normalised by the global token count),
    # the one-process gradient one sum over the batch: ~1e-7 relative differences per step, which
    # AdamW carries over 8 steps (measured: 1.8e-6 at most). Tolerance 1e-4, on weights that
    # training moved by 1.35e-2: a rank that trained on its half alone would be off by ~1e-2.
    process = torch.load(tmp_path / "process" / "rank0.pt")
    moved = _max_abs_diff(process, untrained)
    two_vs_process = _max_abs_diff(rank0, process)
    print(f"\n[multi-worker] max |w| change from training {moved:.3e}; 2 workers vs one process {two_vs_process:.3e}")
    print(f"[multi-worker] stage seconds (inside the worker): 2 workers x 1 CPU {two[0]['stage_seconds']:.2f} s, "
          f"this process (2 threads) {reference['stage_seconds']:.2f} s; TorchTrainer.fit wall {two_seconds:.1f} s")
    assert moved > 1e-2
    assert two_vs_process < 1e-4
    # The logged loss is the global batch's loss (gathered over ranks), the same on both ranks.
    assert two[0]["losses"] == two[1]["losses"]
    assert two[0]["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert two[0]["losses"][-1] < two[0]["losses"][0]


# ---------------------------------------------------------------- slow tier: torch processes, FSDP2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharded_worker(rank: int, world: int, port: int, model_path: str, out_dir: str) -> None:
    """One of two plain torch processes (gloo, no Ray): the lead/follow protocol over torch
    collectives, then a model sharded with FSDP2 (`fully_shard`, as the Trainer does on GPUs)
    taking one AdamW step, consolidated and saved by rank 0."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.fsdp import fully_shard

    from trainables import distributed, ranks
    from trainables.models import load_model_and_tokenizer

    out = Path(out_dir)
    record: dict = {"rank": ranks.rank(), "world_size": ranks.world_size()}
    seen: list = []
    if ranks.is_writer():
        distributed.lead("note", "a", 1)
        distributed.lead("note", {"big": "x" * 5000}, 2)  # far above Ray Train's 1 kB broadcast
        distributed.release_followers()
    else:
        record["commands"] = distributed.follow({"note": lambda *args: seen.append(list(args))})
    record["seen"] = seen

    model, tokenizer = load_model_and_tokenizer(model_path, dtype="float32")
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    record["sharded"] = distributed.is_sharded(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.arange(2 * 12).reshape(2, 12) * (rank + 3) % 500 + 5  # different data per rank
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    full = {name: p.full_tensor().detach().clone() for name, p in model.named_parameters()}  # collective
    probe = torch.arange(10).unsqueeze(0) + 7
    with torch.no_grad():
        sharded_logits = model(input_ids=probe).logits  # collective forward

    plain = distributed.consolidate(model)
    checkpoint = distributed.save_stage_checkpoint(model, tokenizer, out / "checkpoint")
    if ranks.is_writer():
        assert plain is not None and not distributed.is_sharded(plain)
        with torch.no_grad():
            plain_logits = plain(input_ids=probe).logits
        saved, _ = load_model_and_tokenizer(str(checkpoint), dtype="float32")
        record["plain_vs_full"] = max((plain.state_dict()[k] - v).abs().max().item() for k, v in full.items())
        record["saved_vs_full"] = max((saved.state_dict()[k] - v).abs().max().item() for k, v in full.items())
        record["logits_diff"] = (plain_logits - sharded_logits).abs().max().item()
        untrained, _ = load_model_and_tokenizer(model_path, dtype="float32")
        record["moved"] = max((untrained.state_dict()[k] - v).abs().max().item() for k, v in full.items())
    else:
        record["plain_is_none"] = plain is None
    (out / f"sharded{rank}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_lead_follow_over_torch_and_fsdp_weights_consolidated_on_rank0(single_process, tiny_model_path, tmp_path):
    """The FSDP path of the Trainer needs GPUs; what can run here is what the chain does with a
    sharded model afterwards: gather the full weights (a collective), rank 0 saves and evaluates
    a plain copy that computes exactly what the sharded model computes."""
    import torch.multiprocessing as mp

    mp.spawn(_sharded_worker, args=(2, _free_port(), str(tiny_model_path), str(tmp_path)), nprocs=2)
    rank0, rank1 = (json.loads((tmp_path / f"sharded{r}.json").read_text()) for r in range(2))
    assert (rank0["world_size"], rank1["world_size"], rank0["rank"], rank1["rank"]) == (2, 2, 0, 1)
    assert rank1["commands"] == 2 and rank1["seen"] == [["a", 1], [{"big": "x" * 5000}, 2]]
    assert rank0["sharded"] and rank1["sharded"] and rank1["plain_is_none"]
    assert rank0["moved"] > 1e-3  # the step changed the weights ...
    assert rank0["plain_vs_full"] == 0.0 and rank0["saved_vs_full"] == 0.0  # ... and they were gathered whole
    assert rank0["logits_diff"] < 1e-5  # rotary buffers etc. rebuilt: same function as the sharded model


@pytest.mark.slow
def test_study_with_two_workers_per_trial_matches_one_worker(ray_cluster, data_dir, tmp_path):
    """A whole chain (2 stages, replay) with workers_per_trial: 2 through run_study: rank 0 alone
    writes; rows, accuracies and stored weights equal those of the same study on 1 worker."""
    import polars as pl
    from safetensors.torch import load_file

    from study.orchestrate import run_study
    from study.spec_loading import spec_from_dict

    def run(storage: Path, execution: dict) -> Path:
        outcome = run_study(spec_from_dict({
            "name": "mw", "model": {"name": "tiny", "max_length": MAX_LENGTH}, "data_dir": str(data_dir),
            "tasks": {"toxigen_qa": {"train_size": 64, "eval_size": 32}, "arc_easy": {"train_size": 64, "eval_size": 32}},
            "stage_defaults": {"method": "sft", "learning_rate": 3e-3, "batch_size": 16, "steps": 8},
            "chains": {"tqa_arc": [{"task": "toxigen_qa"},
                                   {"task": "arc_easy", "replay": {"from_stage": 1, "fraction": 0.25}}]},
            "storage": str(storage), "execution": execution, "keep_checkpoints": "all",
        }), report=False)
        assert outcome.failed == []
        return outcome.study_dir

    two = run(tmp_path / "two", {"executor": "train", "workers_per_trial": 2, "cpus_per_trial": 2})
    one = run(tmp_path / "one", {"executor": "function", "workers_per_trial": 1, "cpus_per_trial": 1})

    def table(study_dir: Path, name: str):
        return pl.read_parquet(study_dir / name / "*.parquet")

    for name in ("trials", "evals", "predictions", "train_log", "replay", "weights"):
        assert table(two, name).height == table(one, name).height > 0, name
    assert set(table(two, "trials")["executor"]) == {"train"}
    assert sorted(table(two, "evals")["stage"].unique()) == [0, 1, 2]
    # Ray Train kept its run under the study folder, named by the trial id.
    assert (two / "_ray_train" / table(two, "trials")["trial_id"][0]).is_dir()
    accuracy = [table(d, "evals").sort("stage", "eval_task", "group")["accuracy"].to_list() for d in (two, one)]
    assert accuracy[0] == accuracy[1]
    losses = [table(d, "train_log").sort("stage", "step")["loss"].to_list() for d in (two, one)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert sorted(table(two, "replay")["example_id"]) == sorted(table(one, "replay")["example_id"])
    for key in table(two, "trials")["stage_key"]:
        a = load_file(two / "stages" / key / "checkpoint" / "model.safetensors")
        b = load_file(one / "stages" / key / "checkpoint" / "model.safetensors")
        assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-4, key  # measured 1.8e-6, 3.3e-5
    assert not list((two / "_work").glob("*/*"))  # every rank removed its scratch folder


def test_search_batch_sizes_must_split_over_the_workers():
    from study.spec_loading import SpecError, spec_from_dict

    raw = {"name": "s", "model": "tiny", "chains": {"c": [{"task": "toxigen_qa", "batch_size": 8}]},
           "execution": {"executor": "train", "workers_per_trial": 2},
           "search": {"num_samples": 2, "objectives": [{"metric": "toxigen_qa/accuracy", "mode": "max"}],
                      "space": {"stage1.batch_size": {"int": [4, 16]}}}}
    with pytest.raises(SpecError) as err:
        spec_from_dict(raw)
    assert "search.space.stage1.batch_size: with workers_per_trial = 2 use {choice: [...]}" in err.value.render()
    with pytest.raises(SpecError) as err:
        spec_from_dict({**raw, "search": {**raw["search"], "space": {"stage1.batch_size": {"choice": [8, 9]}}}})
    assert "search.space.stage1.batch_size" in err.value.render() and "9" in err.value.render()
    spec_from_dict({**raw, "search": {**raw["search"], "space": {"stage1.batch_size": {"choice": [8, 16]}}}})


def _dpo_and_reward_worker(rank: int, world: int, port: int, model_path: str, data_dir: str, out_dir: str) -> None:
    """One of two plain torch processes (gloo): a DPO trainer whose reference log-probabilities
    are precomputed over both ranks; a reward model trained by both and saved by rank 0; a
    sequence classifier sharded with FSDP2 and consolidated on rank 0 as its own class."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.fsdp import fully_shard

    from contract.plan import QA_PAIRS, RewardTrainingPlan
    from tasks import load_examples
    from trainables import distributed
    from trainables.models import load_model_and_tokenizer
    from trainables.stages.dpo import build_dpo_trainer, preference_tokens
    from trainables.stages.reward_model import load_reward_model, train_reward_model

    out = Path(out_dir)
    record: dict = {"rank": rank}
    model, tokenizer = load_model_and_tokenizer(model_path, dtype="float32")
    examples = load_examples("toxigen_qa", "train", size=10, data_dir=data_dir)
    stage = stage_plan({"method": "dpo", "batch_size": 4, "steps": 1, "dpo": {"precompute_reference": True}})
    trainer = build_dpo_trainer(model=model, tokenizer=tokenizer, stage=stage, training=TRAINING, max_length=256,
                                pairs=preference_tokens(tokenizer, examples, seed=0), model_dtype="float32",
                                work_dir=str(out / f"dpo{rank}"))
    record["ref_chosen"] = list(trainer.train_dataset["ref_chosen_logps"])
    record["ref_model"] = trainer.ref_model is not None
    del trainer

    path = train_reward_model(model_plan=model_plan(model_path, max_length=256), examples=examples, seed=0,
                              settings=RewardTrainingPlan(steps=2, learning_rate=1e-2, batch_size=4, data=QA_PAIRS),
                              work_dir=str(out / f"rm{rank}"), training=TRAINING, out_dir=str(out / "reward_model"))
    reward, _ = load_reward_model(path, model_dtype="float32")  # every rank reads rank 0's save
    record["reward_path"] = path
    record["reward_weights"] = {n: p.sum().item() for n, p in reward.named_parameters()}

    classifier, _ = load_reward_model(model_path, model_dtype="float32")
    for layer in classifier.model.layers:
        fully_shard(layer)
    fully_shard(classifier)
    full = {name: p.full_tensor().detach().clone() for name, p in classifier.named_parameters()}  # collective
    plain = distributed.consolidate(classifier)
    in_bf16 = distributed.consolidate(classifier, dtype=torch.bfloat16)  # the study's weights dtype
    if plain is not None:
        record["plain_class"] = type(plain).__name__
        record["plain_vs_full"] = max((plain.state_dict()[k] - v).abs().max().item() for k, v in full.items())
        record["bf16_dtypes"] = sorted({str(p.dtype) for p in in_bf16.parameters()})
        record["bf16_vs_full"] = max((in_bf16.state_dict()[k].float() - v).abs().max().item() for k, v in full.items())
    (out / f"dpo_reward{rank}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_dpo_precompute_and_reward_model_over_two_ranks(single_process, tiny_model_path, data_dir, tmp_path):
    """What needs several ranks in the reference and reward-model paths, on gloo: the precomputed
    reference log-probabilities are gathered in row order and equal one process's (TRL's own
    precompute would look for rank 0's cache file in each rank's private temporary folder); the
    reward model both ranks trained is saved once and read by both; an FSDP-sharded classifier
    is consolidated as a classifier."""
    import torch.multiprocessing as mp

    from trainables.models import load_model_and_tokenizer
    from trainables.stages.dpo import build_dpo_trainer, preference_tokens
    from tasks import load_examples

    mp.spawn(_dpo_and_reward_worker, args=(2, _free_port(), str(tiny_model_path), str(data_dir), str(tmp_path)),
             nprocs=2)
    rank0, rank1 = (json.loads((tmp_path / f"dpo_reward{r}.json").read_text()) for r in range(2))

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    examples = load_examples("toxigen_qa", "train", size=10, data_dir=data_dir)
    one = build_dpo_trainer(model=model, tokenizer=tokenizer, training=TRAINING, max_length=256,
                            stage=stage_plan({"method": "dpo", "batch_size": 4, "steps": 1,
                                              "dpo": {"precompute_reference": True}}),
                            pairs=preference_tokens(tokenizer, examples, seed=0), model_dtype="float32",
                            work_dir=str(tmp_path / "one"))
    single = list(one.train_dataset["ref_chosen_logps"])
    assert len(rank0["ref_chosen"]) == len(single) == 10  # 10 rows over 2 ranks × 2: the last batch padded, dropped
    assert rank0["ref_chosen"] == pytest.approx(single, abs=1e-5)
    assert rank1["ref_chosen"] == rank0["ref_chosen"]
    assert not rank0["ref_model"] and not rank1["ref_model"]
    assert rank0["reward_path"] == rank1["reward_path"] == str(tmp_path / "reward_model")
    assert rank0["reward_weights"] == rank1["reward_weights"]
    assert rank0["plain_class"] == "LlamaForSequenceClassification" and rank0["plain_vs_full"] == 0.0
    assert rank0["bf16_dtypes"] == ["torch.bfloat16"] and 0 < rank0["bf16_vs_full"] < 0.05  # bf16 rounding only
    assert "plain_class" not in rank1


def _eval_plan(data_dir, model_path, study_dir):
    from study.planner import build_plans
    from study.spec_loading import spec_from_dict

    spec = spec_from_dict({
        "name": "ev", "model": {"name": "tiny", "max_length": 256}, "data_dir": str(data_dir),
        "tasks": {"toxigen_qa": {"train_size": 8, "eval_size": 24, "eval_modes": ["score", "generate"]},
                  "arc_easy": {"eval_size": 21}, "toxigen_prompts": {"eval_size": 10}},
        "eval_tasks": ["toxigen_qa", "arc_easy", "toxigen_prompts"],
        "training": {"eval_batch_size": 4},
        "generation": {"batch_size": 3, "answer_max_new_tokens": 6, "max_new_tokens": 6},
        "chains": {"c": [{"task": "toxigen_qa"}]},
    })
    return build_plans(spec, study_dir=study_dir, data_dir=str(data_dir), base_model_path=str(model_path),
                       chat=False)[0]


def _shared_eval_worker(rank: int, world: int, port: int, model_path: str, data_dir: str, out_dir: str) -> None:
    """One of two plain torch processes (gloo): the chain's evaluation of one model, every rank
    running its share of the batches (evaluate_rows(shared=True))."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from trainables import trial_data
    from trainables.evaluation.dispatch import evaluate_rows
    from trainables.models import load_model_and_tokenizer

    batches = []  # one entry per forward pass this rank ran
    plan = _eval_plan(data_dir, model_path, Path(out_dir) / "study")
    model, tokenizer = load_model_and_tokenizer(model_path, dtype="float32")
    model.register_forward_pre_hook(lambda module, args, kwargs: batches.append(1), with_kwargs=True)
    evals, predictions = evaluate_rows(plan, model, tokenizer, trial_data.plan_eval_sets(plan), shared=True)
    from trainables.evaluation import dispatch

    Path(out_dir, f"eval{rank}.json").write_text(json.dumps({"evals": evals, "predictions": predictions,
                                                              "forwards": len(batches),
                                                              "judges": dispatch._classifier.cache_info().currsize}))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_evaluation_shared_over_two_ranks_equals_one_process(single_process, tiny_model_path, data_dir, tmp_path):
    """Each rank runs every other batch of the option scoring, the generated answers and the
    safety generations; the rows rank 0 ends with are exactly one process's (same batches, same
    kernels), rank 1's the same but for the safety rows (only the writer loads and runs the
    toxicity judge), and each rank ran only part of the forward passes."""
    import torch.multiprocessing as mp

    from trainables import trial_data
    from trainables.evaluation.dispatch import evaluate_rows
    from trainables.models import load_model_and_tokenizer

    mp.spawn(_shared_eval_worker, args=(2, _free_port(), str(tiny_model_path), str(data_dir), str(tmp_path)), nprocs=2)
    ranks_out = [json.loads((tmp_path / f"eval{r}.json").read_text()) for r in range(2)]

    torch.set_num_threads(1)  # as each rank: the same kernels, bit for bit
    plan = _eval_plan(data_dir, tiny_model_path, tmp_path / "one")
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    forwards = []
    model.register_forward_pre_hook(lambda module, args, kwargs: forwards.append(1), with_kwargs=True)
    evals, predictions = evaluate_rows(plan, model, tokenizer, trial_data.plan_eval_sets(plan))
    one = json.loads(json.dumps({"evals": evals, "predictions": predictions}))  # as the ranks wrote them
    assert ranks_out[0]["evals"] == one["evals"] and ranks_out[0]["predictions"] == one["predictions"]
    judged = {"toxigen_prompts"}
    assert ranks_out[1]["evals"] == [r for r in one["evals"] if r["eval_task"] not in judged]
    assert ranks_out[1]["predictions"] == [r for r in one["predictions"] if r["eval_task"] not in judged]
    assert (ranks_out[0]["judges"], ranks_out[1]["judges"]) == (1, 0)
    assert {p["mode"] for p in one["predictions"]} == {"score", "generate"}
    assert {p["eval_task"] for p in one["predictions"]} == {"toxigen_qa", "arc_easy", "toxigen_prompts"}
    assert 0 < ranks_out[0]["forwards"] < len(forwards) and 0 < ranks_out[1]["forwards"] < len(forwards)
    assert ranks_out[0]["forwards"] + ranks_out[1]["forwards"] == len(forwards)
