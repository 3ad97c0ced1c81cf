"""GPU check: one SFT and one DPO stage of a real architecture, engine against plain TRL.

    python bench/gpu_check.py [--sizes qwen2-0.5b,qwen2-1.5b] [--steps 20] [--seq-len 512]
                              [--examples 320] [--eval-examples 300] [--batch-size 16]
                              [--data-dir DIR] [--peak-tflops X] [--threads N] [--out results.json]

For each size (a randomly initialised model of a published architecture, built from its config
values with transformers' config classes, nothing downloaded; the weights are saved as
safetensors into a temp folder with a byte-level BPE tokenizer trained here on the examples, as
trainables/tiny_model.py does) and each method (sft, dpo), one stage runs twice on the same
examples (ARC-Easy training examples from the mirror, $STUDY_DATA_DIR or --data-dir; synthetic
ARC-style questions when there is none):

  engine   trainables.stages.get_runner(method) with the plan parts a study would give it
           (contract.plan StagePlan / TrainingPlan / ModelPlan filled from study.spec's defaults:
           lr 1e-5, batch 16, AdamW (0.9, 0.95), weight decay 0.1, cosine, model.dtype auto =
           float32 weights under bf16 autocast on a bf16 GPU), the model loaded by
           trainables.models.load_model_and_tokenizer
  TRL      plain SFTTrainer (prompt/completion text, completion-only loss) / DPOTrainer (text
           preference rows, sigmoid loss, a second copy of the model as the reference) with the
           same hyperparameters, bf16 as the engine resolves it (trainables.models.bf16_autocast)

Per (size, method) it prints: tokens/s of each path (non-padding tokens through the policy's
forward, from the end of the first optimizer step to the end of the last: the first step's
warm-up is left out) and their ratio engine / TRL (target >= 0.95); peak GPU memory
(torch.cuda.max_memory_allocated, from before the model loads) of each path against the memory
model's estimate (trainables.memory_model.estimate at the padded length the batches really had,
less its CUDA-runtime term, which lives outside PyTorch's allocator; target within 15%); MFU =
6 * parameters * tokens/s over the GPU's dense bf16 peak (a table by torch.cuda.get_device_name(),
or --peak-tflops; DPO's reference forward, 2 * N more per token, is not counted). Per size, the
eval rate: examples/s of trainables.evaluation.option_scoring.evaluate_examples on ARC-Easy test
questions, in the precision a GPU trial resolves (bf16 autocast).

Without CUDA the same code runs scaled down (the engine's tiny architecture, 3 steps, 16
examples) and says loudly that it is not a GPU measurement: the memory columns read
"n/a (CPU)" and MFU is not computed, but both paths' tokens/s and their ratio are. Numbers depend
on the machine and its load; compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 0.95
MEMORY_TOLERANCE = 0.15
NOT_ON_CPU = "n/a (CPU)"

ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    # Qwen/Qwen2-0.5B's config.json
    "qwen2-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                 max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                 tie_word_embeddings=True)),
    # Qwen/Qwen2-1.5B's config.json
    "qwen2-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                 max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                 tie_word_embeddings=True)),
    # TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T's config.json (a Llama of similar size)
    "tinyllama-1.1b": ("llama", dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                     num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                                     max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # The engine's built-in tiny model (trainables/tiny_model.py): the CPU run's size; its
    # vocabulary is the tokenizer's.
    "tiny": ("llama", {}),
}
GPU_SIZES = "qwen2-0.5b,qwen2-1.5b"
CPU_SIZES = "tiny"

PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    # Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets; the first
    # substring of torch.cuda.get_device_name() that matches wins.
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0),
)

WORDS = ("plant", "water", "energy", "rock", "cloud", "heat", "animal", "light", "sound", "magnet", "seed",
         "metal", "river", "moon", "season", "cell", "gravity", "fossil", "weather", "mixture")


def peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


# ---------------------------------------------------------------- data and model


def synthetic_examples(n: int, split: str) -> list[Any]:
    """ARC-style four-option questions of made-up words (when no mirror is at hand)."""
    import random

    from tasks.example import Example

    rng = random.Random(f"gpu-check-{split}")
    out = []
    for i in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30)))
        choices = "\n".join(f"{name}. {' '.join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))}"
                            for name in "ABCD")
        out.append(Example(example_id=f"synthetic/{split}-{i}",
                           prompt=f"Instructions: Pick the best answer.\nQuestion: {question}?\n{choices}\nAnswer:",
                           answer_prefix=" The best answer is", options=(" A.", " B.", " C.", " D."),
                           option_names=("A", "B", "C", "D"), label=i % 4))
    return out


def load_data(data_dir: str | None, n_train: int, n_eval: int) -> tuple[list[Any], list[Any], str]:
    if not data_dir:
        return synthetic_examples(n_train, "train"), synthetic_examples(n_eval, "test"), "synthetic (no mirror)"
    from tasks import load_examples

    train = load_examples("arc_easy", "train", size=n_train, data_dir=data_dir, data_seed=0)
    test = load_examples("arc_easy", "eval", limit=n_eval, data_dir=data_dir)
    return train, test, "ARC-Easy (mirror)"


def build_model(size: str, examples: Sequence[Any], folder: Path, device: str) -> Any:
    """Random weights of `size`'s architecture (seed 0) and a tokenizer trained on the examples'
    text, saved into `folder` (safetensors); returns the config."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from trainables.tiny_model import TINY_ARCH, train_tokenizer

    tokenizer = train_tokenizer(ex.prompt + "".join(ex.answer_prefix + o for o in ex.options) for ex in examples)
    family, arch = ARCHITECTURES[size]
    arch = dict(arch or {**TINY_ARCH, "vocab_size": len(tokenizer)})
    if arch["vocab_size"] < len(tokenizer):
        raise ValueError(f"{size}: vocabulary {arch['vocab_size']} < the tokenizer's {len(tokenizer)}")
    config_class = {"qwen2": Qwen2Config, "llama": LlamaConfig}[family]
    config = config_class(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, **arch)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return config


# ---------------------------------------------------------------- the plans a study would give


@dataclasses.dataclass(frozen=True)
class Plans:
    training: Any
    model: Any
    stages: dict[str, Any]


def plans(model_path: Path, *, steps: int, seq_len: int, batch_size: int | None) -> Plans:
    """The plan parts a planned stage gets, from the study file's defaults (study.spec)."""
    from contract.plan import DpoPlan, ModelPlan, StagePlan, TrainingPlan
    from study.spec import DPOSpec, ModelSpec, StageSpec, TrainingSpec

    training = TrainingPlan(**{**dataclasses.asdict(TrainingSpec()), "activation_checkpointing": False})
    model = ModelPlan(name=str(model_path), max_length=seq_len, dtype=ModelSpec().dtype, trust_remote_code=False,
                      chat_template=False, path=str(model_path), chat=False)
    schedule = StageSpec(task="arc_easy")
    stages = {
        method: StagePlan(stage=1, method=method, task="arc_easy", learning_rate=schedule.learning_rate,
                          batch_size=batch_size or schedule.batch_size, steps=steps, seed=0, train_size=None,
                          task_version="gpu-check", replay=None, train_limit=None, data_seed=None,
                          option_counts=None, dpo=DpoPlan(**dataclasses.asdict(DPOSpec())) if method == "dpo" else None,
                          ppo=None, rloo=None, stage_key="gpu-check", start_from=None)
        for method in ("sft", "dpo")
    }
    return Plans(training=training, model=model, stages=stages)


# ---------------------------------------------------------------- measuring one run


class Meter:
    """Counts the tokens through `model`'s forward and times the optimizer steps (a global
    post-step hook, after a CUDA synchronisation); the peak GPU memory since `start()`."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.tokens: list[Any] = []
        self.padded_length = 0
        self.steps: list[tuple[float, int]] = []  # (time after the step, forwards so far)
        self._handles: list[Any] = []

    def start(self) -> None:
        import torch

        from trainables.models import release_memory

        release_memory()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self._baseline = torch.cuda.memory_allocated()  # what earlier runs left behind, if anything
        self._start = time.perf_counter()

    def watch(self, model: Any) -> None:
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def forward(module, args, kwargs):
            if module is not model:
                return  # a deep copy that kept the hook: DPO's frozen reference (trainables.stages.trainer_plumbing)
            ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask")
            self.tokens.append(mask.sum() if mask is not None else ids.numel())
            self.padded_length = max(self.padded_length, int(ids.shape[-1]))

        def step(optimizer, args, kwargs):
            if self.cuda:
                torch.cuda.synchronize()
            self.steps.append((time.perf_counter(), len(self.tokens)))

        self._handles = [model.register_forward_pre_hook(forward, with_kwargs=True),
                         register_optimizer_step_post_hook(step)]

    def result(self) -> dict[str, Any]:
        import torch

        for handle in self._handles:
            handle.remove()
        if len(self.steps) < 2:
            raise RuntimeError(f"{len(self.steps)} optimizer steps seen; the check needs at least 2")
        (t0, f0), (t1, f1) = self.steps[0], self.steps[-1]
        tokens = int(sum(int(t) for t in self.tokens[f0:f1]))
        return {"tokens_per_s": tokens / (t1 - t0), "timed_steps": len(self.steps) - 1, "timed_tokens": tokens,
                "step_seconds": [round(b[0] - a[0], 4) for a, b in zip(self.steps, self.steps[1:])],
                "padded_length": self.padded_length, "seconds_total": time.perf_counter() - self._start,
                "peak_gb": (torch.cuda.max_memory_allocated() - self._baseline) / 1e9 if self.cuda else None}


def engine_run(method: str, plan: Plans, examples: Sequence[Any], work: Path, cuda: bool) -> dict[str, Any]:
    from trainables.models import load_model_and_tokenizer
    from trainables.stages import get_runner

    meter = Meter(cuda)
    meter.start()
    model, tokenizer = load_model_and_tokenizer(plan.model.path, dtype=plan.model.dtype)
    meter.watch(model)
    get_runner(method)(model=model, tokenizer=tokenizer, stage=plan.stages[method], examples=examples,
                       training=plan.training, model_plan=plan.model, work_dir=str(work / f"engine-{method}"))
    result = meter.result()
    del model, tokenizer
    return result


def _checkpointing_field() -> str:
    """transformers 5 calls it activation_checkpointing (gradient_checkpointing before)."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def trl_run(method: str, plan: Plans, examples: Sequence[Any], work: Path, cuda: bool) -> dict[str, Any]:
    """The same stage through plain TRL: its own text processing, our hyperparameters."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from contract.workers import batch_split
    from trainables.models import bf16_autocast, weights_dtype
    from trainables.stages.dpo import preference_pairs

    stage, training = plan.stages[method], plan.training
    split = batch_split(stage.batch_size, 1, training.micro_batch_size)
    args = dict(
        output_dir=str(work / f"trl-{method}"), max_steps=stage.steps,
        per_device_train_batch_size=split.micro_batch, gradient_accumulation_steps=split.accumulation_steps,
        learning_rate=stage.learning_rate, adam_beta1=training.adam_beta1, adam_beta2=training.adam_beta2,
        weight_decay=training.weight_decay, lr_scheduler_type=training.lr_scheduler,
        warmup_steps=training.warmup_steps, max_grad_norm=training.max_grad_norm, optim=training.optimizer,
        seed=stage.seed, data_seed=stage.seed, bf16=bf16_autocast(plan.model.dtype), fp16=False, use_cpu=not cuda,
        save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True,
        max_length=plan.model.max_length, **{_checkpointing_field(): training.activation_checkpointing},
    )
    load = dict(dtype=weights_dtype(plan.model.dtype), **({"device_map": {"": "cuda:0"}} if cuda else {}))

    meter = Meter(cuda)
    meter.start()
    model = AutoModelForCausalLM.from_pretrained(plan.model.path, **load)
    tokenizer = AutoTokenizer.from_pretrained(plan.model.path)
    meter.watch(model)
    if method == "sft":
        data = Dataset.from_list([{"prompt": ex.prompt, "completion": ex.completion} for ex in examples])
        trainer = SFTTrainer(model=model, args=SFTConfig(**args, completion_only_loss=True, packing=False),
                             train_dataset=data, processing_class=tokenizer)
    else:
        ref = AutoModelForCausalLM.from_pretrained(plan.model.path, **load)
        data = Dataset.from_list(preference_pairs(examples, stage.seed))
        trainer = DPOTrainer(model=model, ref_model=ref, train_dataset=data, processing_class=tokenizer,
                             args=DPOConfig(**args, beta=stage.dpo.beta, loss_type=["sigmoid"],
                                            precompute_ref_log_probs=False))
    trainer.remove_callback(PrinterCallback)  # no per-step printing, as the engine's trainers
    trainer.train()
    result = meter.result()
    del trainer, model
    return result


def memory_estimate(config: Any, method: str, plan: Plans, padded_length: int) -> float:
    """The memory model's per-GPU bytes for this step, less the CUDA runtime (outside the allocator)."""
    from trainables.memory_model import StepSetup, estimate, model_shape

    setup = StepSetup(method=method, seq_len=padded_length, batch_size=plan.stages[method].batch_size,
                      micro_batch_size=plan.training.micro_batch_size,
                      activation_checkpointing=plan.training.activation_checkpointing,
                      optimizer=plan.training.optimizer, dtype=plan.model.dtype, on_gpu=True)
    breakdown = estimate(model_shape(config), setup)
    return (breakdown.total - breakdown.runtime) / 1e9


def eval_rate(plan: Plans, examples: Sequence[Any], cuda: bool) -> dict[str, Any]:
    """Examples/s of option scoring, in the precision a trial on this device resolves."""
    import torch

    from trainables.evaluation.option_scoring import evaluate_examples
    from trainables.evaluation.precision import scoring
    from trainables.models import load_model_and_tokenizer, release_memory
    from trainables.tokenization import as_encoder

    release_memory()
    precision = "bfloat16" if cuda and plan.model.dtype != "float32" else "float32"
    model, tokenizer = load_model_and_tokenizer(plan.model.path, dtype=plan.model.dtype)
    model.eval()
    encoder = as_encoder(tokenizer)
    kwargs = dict(batch_size=plan.training.eval_batch_size, max_length=plan.model.max_length)
    with scoring(model, precision) as scored_model:
        evaluate_examples(scored_model, encoder, examples[:4], **kwargs)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        evaluate_examples(scored_model, encoder, examples, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    del model
    return {"examples": len(examples), "precision": precision, "examples_per_s": len(examples) / seconds}


# ---------------------------------------------------------------- the check


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from trainables.memory_model import model_shape

    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or (peak_tflops(device_name) if cuda else None)
    train, test, source = load_data(args.data_dir, args.examples, args.eval_examples)
    results: dict[str, Any] = {"gpu": cuda, "device": device_name, "peak_bf16_tflops": peak, "data": source,
                               "steps": args.steps, "seq_len": args.seq_len, "rows": [], "eval": []}
    for size in args.sizes.split(","):
        folder = work / size
        config = build_model(size, train + test, folder, "cuda" if cuda else "cpu")
        params = model_shape(config).params
        plan = plans(folder, steps=args.steps, seq_len=args.seq_len, batch_size=args.batch_size)
        for method in ("sft", "dpo"):
            engine = engine_run(method, plan, train, work, cuda)
            trl = trl_run(method, plan, train, work, cuda)
            row = {"size": size, "method": method, "params": params, "batch_size": plan.stages[method].batch_size,
                   "engine": engine, "trl": trl, "ratio": engine["tokens_per_s"] / trl["tokens_per_s"]}
            if cuda:
                row["estimate_gb"] = memory_estimate(config, method, plan, engine["padded_length"])
                for path in ("engine", "trl"):
                    row[path]["memory_error"] = row[path]["peak_gb"] / row["estimate_gb"] - 1
                    row[path]["mfu"] = (6 * params * row[path]["tokens_per_s"] / (peak * 1e12)) if peak else None
            else:
                row["estimate_gb"] = None
                row["memory"] = NOT_ON_CPU
            results["rows"].append(row)
        results["eval"].append({"size": size, **eval_rate(plan, test, cuda)})
        shutil.rmtree(folder, ignore_errors=True)
    return results


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def table(results: dict[str, Any]) -> str:
    cuda = results["gpu"]
    lines = ["| size | method | params | engine tok/s | TRL tok/s | ratio (≥ 0.95) | engine peak GB | TRL peak GB "
             "| estimate GB | engine vs est. (±15%) | engine MFU | TRL MFU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        e, t = row["engine"], row["trl"]
        ratio = f"{row['ratio']:.3f}" + ("" if row["ratio"] >= TARGET_RATIO else " ✗")
        if cuda:
            error = e["memory_error"]
            memory = [f"{e['peak_gb']:.2f}", f"{t['peak_gb']:.2f}", f"{row['estimate_gb']:.2f}",
                      f"{100 * error:+.1f}%" + ("" if abs(error) <= MEMORY_TOLERANCE else " ✗")]
            mfu = [_pct(e["mfu"]), _pct(t["mfu"])]
        else:
            memory, mfu = [NOT_ON_CPU] * 4, ["n/a"] * 2
        lines.append(f"| {row['size']} | {row['method']} | {row['params'] / 1e6:.1f}M | {e['tokens_per_s']:,.0f} "
                     f"| {t['tokens_per_s']:,.0f} | {ratio} | " + " | ".join(memory + mfu) + " |")
    lines += ["", "| size | eval questions | precision | examples/s |", "|---|---|---|---|"]
    for row in results["eval"]:
        lines.append(f"| {row['size']} | {row['examples']} | {row['precision']} | {row['examples_per_s']:,.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=GPU_SIZES if cuda else CPU_SIZES,
                        help=f"comma-separated from {', '.join(ARCHITECTURES)} (default: {GPU_SIZES} on a GPU, "
                             f"{CPU_SIZES} on CPU)")
    parser.add_argument("--steps", type=int, default=20 if cuda else 3,
                        help="optimizer steps per stage, at least 2: the first is warm-up (default 20; 3 on CPU)")
    parser.add_argument("--seq-len", type=int, default=None, help="model.max_length (default: the study's, 512)")
    parser.add_argument("--examples", type=int, default=320 if cuda else 16,
                        help="training examples (default 320; 16 on CPU)")
    parser.add_argument("--eval-examples", type=int, default=300 if cuda else 8,
                        help="ARC-Easy test questions scored for the eval rate (default 300; 8 on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="the stage's batch (default: the study's, 16)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak in TFLOP/s (default: from the device name)")
    parser.add_argument("--data-dir", default=os.environ.get("STUDY_DATA_DIR"),
                        help="the dataset mirror (default $STUDY_DATA_DIR; none: synthetic questions)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is steadier on a shared, busy machine")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is warm-up)")
    unknown = set(args.sizes.split(",")) - set(ARCHITECTURES)
    if unknown:
        parser.error(f"unknown sizes: {', '.join(sorted(unknown))} (known: {', '.join(ARCHITECTURES)})")
    if args.seq_len is None:
        from study.spec import ModelSpec

        args.seq_len = ModelSpec().max_length

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not cuda:
        print("**NOT A GPU MEASUREMENT**: no CUDA device; a scaled-down CPU run of the same code "
              "(memory not measured, no MFU).\n")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        results = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"device: {results['device']}; data: {results['data']}; {args.steps} steps, max_length {args.seq_len}; "
          f"peak bf16: {results['peak_bf16_tflops'] or 'n/a'} TFLOP/s\n")
    print(table(results))
    if not cuda:
        print("\n**NOT A GPU MEASUREMENT** (CPU, scaled down): only the tokens/s ratio means anything here.")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
