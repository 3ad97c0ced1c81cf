"""One evaluation precision for every model scored, and the devices each path picks (issue #16,
items 3 and 4), checked on CPU: accelerate's bf16-autocast forward is really put on a model by
training with bf16 on the CPU; torch.cuda is monkeypatched where a GPU would be needed."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import weakref
from types import MethodType

import polars as pl
import pytest
import torch

from contract.keys import measure_keys
from contract.layout import StudyLayout
from contract.plan import RunInfo, TrialPlan
from study.planner import base_identity, build_plans, study_base_key
from study.spec import eval_precision
from study.spec_loading import SpecError, spec_from_dict

CHAIN = {"c": [{"task": "toxigen_qa"}]}


def _raw(**extra):
    return {"name": "p", "model": "tiny", "chains": CHAIN, **extra}


# ---------------------------------------------------------------- the setting, plans and keys


@pytest.mark.parametrize(("setting", "gpus", "dtype", "resolved"), [
    ("auto", 0, "auto", "float32"),        # CPU trials
    ("auto", 1, "auto", "bfloat16"),       # GPU trials
    ("auto", 1, "float32", "float32"),     # float32 asked for the model: never bf16
    ("float32", 1, "auto", "float32"),
    ("bfloat16", 0, "auto", "bfloat16"),   # explicit: bf16 autocast on the CPU
])
def test_auto_resolves_from_the_trials_resources(setting, gpus, dtype, resolved):
    spec = spec_from_dict(_raw(model={"name": "tiny", "dtype": dtype}, evaluation={"precision": setting},
                               execution={"gpus_per_trial": gpus}))
    assert eval_precision(spec) == resolved


def test_a_bad_precision_is_refused_with_its_path():
    with pytest.raises(SpecError) as err:
        spec_from_dict(_raw(evaluation={"precision": "fp16"}))
    assert "evaluation.precision" in err.value.render()


def _plan(data_dir, **extra):
    spec = spec_from_dict(_raw(data_dir=str(data_dir), **extra))
    return build_plans(spec, study_dir="/tmp/p", data_dir=str(data_dir), base_model_path="/m/tiny-0123456789ab",
                       chat=False)[0]


def test_bf16_evaluation_enters_plan_and_evals_key_only_when_not_float32(data_dir):
    cpu = _plan(data_dir)
    gpu = _plan(data_dir, execution={"gpus_per_trial": 1})
    assert cpu.eval_precision == "float32" and "eval_precision" not in cpu.to_dict()
    assert gpu.eval_precision == "bfloat16" and gpu.to_dict()["eval_precision"] == "bfloat16"
    assert TrialPlan.from_dict(gpu.to_dict()) == gpu and TrialPlan.from_dict(cpu.to_dict()) == cpu
    # The same evaluation measured in the two precisions is stored under two keys ...
    same_weights = dataclasses.replace(gpu, eval_precision="float32")
    assert measure_keys(gpu).evals != measure_keys(same_weights).evals
    # ... curvature is measured in float32 either way.
    assert measure_keys(gpu).curvature == measure_keys(same_weights).curvature
    explicit = _plan(data_dir, evaluation={"precision": "float32"})
    assert measure_keys(explicit) == measure_keys(cpu)


def test_fsdp_enters_the_stage_keys_and_the_worker_count_does_not(data_dir):
    def key(**execution):
        spec = spec_from_dict(_raw(data_dir=str(data_dir), execution={"executor": "train", **execution}))
        return study_base_key(spec, str(data_dir), "/m/tiny-0123456789ab", False), spec

    one, _ = key(gpus_per_trial=1)
    two, _ = key(gpus_per_trial=2, workers_per_trial=2)
    sharded, spec = key(gpus_per_trial=2, workers_per_trial=2, fsdp=True)
    assert one == two != sharded
    assert base_identity(spec, str(data_dir), "/m/tiny-0123456789ab", False)["fsdp"] is True


@pytest.mark.parametrize(("execution", "message"), [
    ({"gpus_per_trial": 0.5}, "execution.share_gpus: true"),
    ({"gpus_per_trial": 2}, "must be 0 (CPU) or 1, one GPU per worker (got 2"),
    ({"gpus_per_trial": 2, "workers_per_trial": 4, "executor": "train"}, "or 4, one GPU per worker (got 2"),
    ({"gpus_per_trial": 4, "workers_per_trial": 2, "executor": "train"}, "or 2, one GPU per worker (got 4"),
    ({"gpus_per_trial": 1.5, "share_gpus": True}, "with share_gpus, a fraction in (0, 1) (got 1.5)"),
    ({"gpus_per_trial": 1, "workers_per_trial": 2, "share_gpus": True, "executor": "train"},
     "share_gpus is for one-worker trials"),
])
def test_one_whole_gpu_per_worker(execution, message):
    with pytest.raises(SpecError) as err:
        spec_from_dict(_raw(stage_defaults={"batch_size": 16}, execution=execution))
    assert f"execution.gpus_per_trial: must be 0 (CPU) or" in err.value.render()
    assert message in err.value.render()


@pytest.mark.parametrize("execution", [
    {"gpus_per_trial": 0},
    {"gpus_per_trial": 1},
    {"gpus_per_trial": 4, "workers_per_trial": 4, "executor": "train"},
    {"gpus_per_trial": 0.25, "share_gpus": True},
])
def test_whole_gpus_per_worker_or_an_asked_for_share_are_valid(execution):
    spec_from_dict(_raw(stage_defaults={"batch_size": 16}, execution=execution))


# ---------------------------------------------------------------- scoring: unwrapped, one precision


def _accelerate_wrapped(model):
    """`model` with its forward wrapped as accelerate's prepare_model does under bf16 mixed precision."""
    from accelerate.utils import convert_outputs_to_fp32

    model._original_forward = model.forward
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    model.forward = MethodType(convert_outputs_to_fp32(autocast(model.forward.__func__)), model)
    return model


def _examples(data_dir, n=12):
    from tasks import load_examples

    return load_examples("arc_easy", "eval", size=n, data_dir=str(data_dir), data_seed=0)


def _scores(model, tokenizer, examples):
    from trainables.evaluation.option_scoring import option_scores

    return option_scores(model, tokenizer, examples, batch_size=8, max_length=256)


def test_scoring_unwraps_accelerates_autocast_and_applies_the_asked_precision(tiny_model_path, data_dir):
    from trainables.evaluation.precision import is_wrapped, scoring
    from trainables.models import load_model_and_tokenizer

    examples = _examples(data_dir)
    fresh, tokenizer = load_model_and_tokenizer(str(tiny_model_path))
    fp32 = _scores(fresh, tokenizer, examples)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = _scores(fresh, tokenizer, examples)
    assert bf16 != fp32  # the two precisions are told apart on this model

    wrapped = _accelerate_wrapped(load_model_and_tokenizer(str(tiny_model_path))[0])
    assert _scores(wrapped, tokenizer, examples) == bf16  # what scoring it as it came gave
    with scoring(wrapped, "float32") as model:
        assert model is wrapped and not is_wrapped(model)
        assert "forward" not in model.__dict__  # accelerate's model -> forward -> model cycle is gone
        assert _scores(model, tokenizer, examples) == fp32
    with scoring(fresh, "bfloat16") as model:
        assert _scores(model, tokenizer, examples) == bf16
    with torch.autocast("cpu", dtype=torch.bfloat16), scoring(fresh, "float32") as model:
        assert _scores(model, tokenizer, examples) == fp32  # float32 even inside someone's autocast


def test_bf16_scoring_on_a_gpu_without_bf16_is_refused(monkeypatch):
    from trainables.evaluation.precision import autocast_context

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(RuntimeError, match="set evaluation.precision: float32"):
        autocast_context("bfloat16", torch.device("cuda", 0))
    off = autocast_context("float32", torch.device("cuda", 0))
    assert off.device == "cuda" and not off._enabled
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    on = autocast_context("bfloat16", torch.device("cuda", 0))
    assert on.device == "cuda" and on.fast_dtype == torch.bfloat16 and on._enabled
    with pytest.raises(ValueError, match="float32"):
        autocast_context("auto", torch.device("cpu"))  # the plan carries the resolved value only


# ---------------------------------------------------------------- a chain in this process


def _chain_plan(data_dir, tiny_model_path, study, stages):
    spec = spec_from_dict({
        "name": "prec", "model": {"name": "tiny", "max_length": 256}, "data_dir": str(data_dir),
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}, "arc_easy": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 2},
        "chains": {"c": stages},
    })
    plan = build_plans(spec, study_dir=study, data_dir=str(data_dir), base_model_path=str(tiny_model_path),
                       chat=False)[0]
    return dataclasses.replace(plan, run=RunInfo("r1"))


def _train_in_bf16_autocast(monkeypatch):
    """Train as on a bf16 GPU: TrainingArguments(bf16=True), so accelerate wraps the forward."""
    import trainables.models

    monkeypatch.setattr(trainables.models, "bf16_autocast", lambda dtype: True)


def test_a_stage_scored_in_memory_after_training_equals_it_reloaded(tiny_model_path, data_dir, tmp_path,
                                                                    monkeypatch):
    """The in-memory model after a bf16 stage carries accelerate's autocast forward; its stored
    eval and prediction rows equal those of the same stage reloaded from its checkpoint."""
    import trainables.chain as chain
    from tasks import load_examples
    from trainables.evaluation.dispatch import evaluate_rows
    from trainables.models import load_model_and_tokenizer

    _train_in_bf16_autocast(monkeypatch)
    wrapped = []
    real_train = chain.train_stage

    def train(plan, stage, inputs, *args):
        outcome = real_train(plan, stage, inputs, *args)
        wrapped.append("_original_forward" in inputs.model.__dict__)
        return outcome

    monkeypatch.setattr(chain, "train_stage", train)
    plan = _chain_plan(data_dir, tiny_model_path, tmp_path / "prec", [{"task": "arc_easy"}])
    chain.run_chain(plan)
    assert wrapped == [True]  # the stage was scored from a model accelerate had wrapped

    model, tokenizer = load_model_and_tokenizer(
        str(tmp_path / "prec" / "stages" / plan.stages[0].stage_key / "checkpoint"))
    eval_sets = {e.task: load_examples(e.task, "eval", size=e.size, data_dir=plan.data_dir, data_seed=plan.data_seed)
                 for e in plan.eval_tasks}
    reloaded = dict(zip(("evals", "predictions"), evaluate_rows(plan, model, tokenizer, eval_sets)))
    for name, rows in reloaded.items():
        stored = pl.read_parquet(tmp_path / "prec" / name / "*.parquet").filter(pl.col("stage") == 1)
        columns = [c for c in rows[0] if c != "stage"]
        assert _row_set(stored.select(columns).to_dicts()) == _row_set(rows, columns), name
    margins = pl.read_parquet(tmp_path / "prec" / "predictions" / "*.parquet")["margin"]
    assert margins.is_finite().all() and margins.n_unique() > 1  # real scores were compared


def _row_set(rows, columns=None):
    return sorted(json.dumps({k: r[k] for k in (columns or r)}, sort_keys=True) for r in rows)


def _run_without_the_collector(chain, plan) -> None:
    """Run the chain with the garbage collector off: only the chain's own collection
    (trainables.models.release_memory) can free reference cycles."""
    gc.collect()
    gc.disable()
    try:
        chain.run_chain(plan)
    finally:
        gc.enable()


def test_the_previous_stages_models_are_collected_before_the_next_stage_trains(tiny_model_path, data_dir, tmp_path,
                                                                               monkeypatch):
    """With the garbage collector off (so only the chain's own collection can free cycles), every
    model loaded before a stage trains (stage 0's evaluation model, the previous stage's trained
    model with accelerate's forward patch) and every optimizer are gone when the stage starts."""
    import trainables.chain as chain

    _train_in_bf16_autocast(monkeypatch)
    loaded: list[weakref.ref] = []
    alive_at_train: list[list[bool]] = []
    optimizers_at_train: list[int] = []
    real_load, real_train = chain.load_model_and_tokenizer, chain.train_stage

    def load(*args, **kwargs):
        model, tokenizer = real_load(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model, tokenizer

    def train(plan, stage, inputs, *args):
        alive_at_train.append([ref() is not None for ref in loaded if ref() is not inputs.model])
        optimizers_at_train.append(sum(issubclass(type(o), torch.optim.Optimizer) for o in gc.get_objects()))
        return real_train(plan, stage, inputs, *args)

    monkeypatch.setattr(chain, "load_model_and_tokenizer", load)
    monkeypatch.setattr(chain, "train_stage", train)
    plan = _chain_plan(data_dir, tiny_model_path, tmp_path / "free", [{"task": "toxigen_qa"}, {"task": "arc_easy"}])
    _run_without_the_collector(chain, plan)
    assert len(loaded) == 3  # base (evaluated), stage 1's start, stage 2's start
    assert alive_at_train == [[False], [False, False]]
    assert optimizers_at_train[1] == 0


def test_a_reward_model_is_trained_and_freed_before_the_policy_loads(tiny_model_path, data_dir, tmp_path,
                                                                     monkeypatch):
    """An online-RL stage that trains its reward model: the reward model is trained first, as its
    own step, and is gone (its trainer and optimizer too) when the policy loads, with the garbage
    collector off; the policy stage then reads the saved reward model from the writer's scratch."""
    import trainables.chain as chain
    import trainables.stages.online_rl as online_rl
    import trainables.stages.reward_model as reward_model
    from trainables.stages import STAGE_RUNNERS

    events: list[str] = []
    reward_models: list[weakref.ref] = []
    alive_at_policy_load: list[bool] = []
    optimizers_at_policy_load: list[int] = []
    real_load_reward, real_load = reward_model.load_reward_model, chain.load_model_and_tokenizer

    def load_reward(*args, **kwargs):
        model, tokenizer = real_load_reward(*args, **kwargs)
        events.append("reward model")
        reward_models.append(weakref.ref(model))
        return model, tokenizer

    def load(path, **kwargs):
        if reward_models:  # the stage's policy (the base model was loaded for stage 0 before)
            events.append("policy")
            alive_at_policy_load.append(reward_models[0]() is not None)
            optimizers_at_policy_load.append(sum(issubclass(type(o), torch.optim.Optimizer)
                                                 for o in gc.get_objects()))
        return real_load(path, **kwargs)

    given_paths = []

    def ppo(**kwargs):
        given_paths.append(kwargs["reward_model_path"])
        return real_ppo(**kwargs)

    real_ppo = STAGE_RUNNERS["ppo"]
    monkeypatch.setattr(reward_model, "load_reward_model", load_reward)
    monkeypatch.setattr(online_rl, "load_reward_model", load_reward)
    monkeypatch.setattr(chain, "load_model_and_tokenizer", load)
    monkeypatch.setitem(STAGE_RUNNERS, "ppo", ppo)
    plan = _chain_plan(data_dir, tiny_model_path, tmp_path / "rm", [{
        "task": "toxigen_qa", "method": "ppo", "steps": 1,
        "ppo": {"response_length": 4, "prompts": "templated", "reward": {"steps": 2, "batch_size": 4}}}])
    _run_without_the_collector(chain, plan)
    # Trained (and loaded once by its trainer's step), freed, then the policy; the runner loads
    # the saved reward model once more, frozen.
    assert events[:2] == ["reward model", "policy"] and events[2:] == ["reward model"]
    assert alive_at_policy_load == [False] and optimizers_at_policy_load == [0]
    assert given_paths == [str(StudyLayout(tmp_path / "rm").stage_work(plan.trial_id, 1, 0) / "reward_model")]


def test_release_memory_empties_the_gpu_cache(monkeypatch):
    from trainables.models import release_memory

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    release_memory()
    assert emptied == [True]


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize(("cuda", "count", "local_rank", "device"), [
    (False, 0, "1", "cpu"),
    (True, 1, None, "cuda:0"),
    (True, 4, "3", "cuda:3"),
    (True, 2, "3", "cuda:1"),  # as accelerate: LOCAL_RANK modulo the visible GPUs
])
def test_models_go_to_the_ranks_own_device(cuda, count, local_rank, device, monkeypatch, tiny_model_path):
    import transformers

    from trainables.models import load_model_and_tokenizer
    from trainables.ranks import model_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert model_device() == torch.device(device)

    asked = {}

    def from_pretrained(path, **kwargs):
        asked.update(kwargs)
        return "model"

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    assert load_model_and_tokenizer(str(tiny_model_path))[0] == "model"
    # Straight to the GPU (no full copy in host RAM first); on CPU the plain load.
    assert asked.get("device_map") == ({"": torch.device(device)} if cuda else None)

    # A reward model too: this rank's GPU, not the node's first.
    from types import SimpleNamespace

    from trainables.stages.reward_model import load_reward_model

    asked.clear()
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained",
                        lambda path, **kwargs: asked.update(kwargs) or SimpleNamespace(config=SimpleNamespace()))
    load_reward_model(str(tiny_model_path), model_dtype="auto")
    assert asked.get("device_map") == ({"": torch.device(device)} if cuda else None)


@pytest.fixture
def restored_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_trial_without_gpus_sees_none(monkeypatch, restored_threads):
    """The function executor's trial and every TorchTrainer worker of a 0-GPU trial run with
    CUDA_VISIBLE_DEVICES="" (when they run the chain); a GPU trial keeps what Ray gave it."""
    import trainables.chain
    from trainables.distributed import FSDP_ENV
    from trainables.tune_trial import chain_trial, hide_gpus_unless_asked, train_worker_loop

    seen = []
    monkeypatch.setattr(trainables.chain, "run_chain",
                        lambda plan, **kwargs: seen.append((plan, os.environ["CUDA_VISIBLE_DEVICES"])))
    monkeypatch.setenv(FSDP_ENV, "0")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    chain_trial({"chain": "c", "seed": 0}, plan_for=lambda config: "plan", executor="function", cpus_per_worker=1,
                gpus_per_worker=0, max_failures=0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    train_worker_loop({"plan": "worker plan", "cpus": 1, "gpus": 0, "fsdp": False})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    train_worker_loop({"plan": "gpu worker", "cpus": 1, "gpus": 1, "fsdp": False})
    assert seen == [("plan", ""), ("worker plan", ""), ("gpu worker", "1")]

    # CUDA already initialised in the process: hiding would come too late, so the trial stops.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="asked for no GPU"):
        hide_gpus_unless_asked(0)
    hide_gpus_unless_asked(1)  # a GPU trial: nothing to hide
