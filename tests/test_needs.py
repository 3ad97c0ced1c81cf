"""What a study needs (study.needs): the block `study validate` and `study run` print, and the
hardware refusal of `study run` (exit 2, nothing written; `--force` passes it).

Llama-2-7B is given as a folder holding only its published config.json (tests/conftest.py
`llama7b_folder`: 6,738,415,616 parameters; no weights, nothing downloaded); the paper preset is
pointed at it. No 7B model is trained: `--force` is followed up to the point where the run would
start (`_run_study` replaced).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from contract.problems import Problem
from study import needs as needs_module
from study.cli import main
from study.needs import CPU_FINE_TUNE_LIMIT, Gated, Needs, cpu_problem, gated_on_hub, login_command, refusal

GPU8 = ["--set", "execution.gpus_per_trial=8", "--set", "execution.workers_per_trial=8"]


def _paper(folder: str, data_dir, *extra: str) -> list[str]:
    return ["paper-first-lr", "--set", f"model.name={folder}", "--set", f"data_dir={data_dir}", *extra]


def test_validate_prints_what_a_7b_preset_needs(capsys, llama7b_folder, data_dir):
    assert main(["validate", *_paper(llama7b_folder, data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"needs: model: {llama7b_folder}, 6,738,415,616 parameters (6.74B)" in out
    # CPU: float32 weights 4p = 26.95 GB, grads 26.95, AdamW 53.91 (tests/test_fsdp_auto.py's arithmetic)
    assert "GB of RAM per CPU worker at the largest step (chains.tqa_arc[0]: sft; weights 27.0, grads 27.0, " \
           "AdamW states 53.9," in out
    # 2 chains x 4 learning rates x 3 seeds; every stage distinct (best_seed: each seed's stage 2 starts
    # from the best first stage, so seeds do not share)
    assert "needs: work: 24 trials, 48 stage trainings after sharing (48 in the chains)," in out
    assert "needs: `study run` refuses this: execution.gpus_per_trial: 0: fine-tuning" in out
    assert "valid study 'paper-first-lr'" in out.splitlines()[-2] and out.splitlines()[-1].startswith("data: ")


def test_validate_on_eight_gpus_gives_the_per_gpu_estimate(capsys, llama7b_folder, data_dir):
    assert main(["validate", *_paper(llama7b_folder, data_dir, *GPU8)]) == 0
    out = capsys.readouterr().out
    # FSDP over 8 (auto): 45.7 GB per GPU by hand (tests/test_fsdp_auto.py's module docstring)
    assert ("needs: per trial: 45.7 GB per GPU at the largest step (chains.tqa_arc[0]: sft, 8 workers, FSDP; "
            "weights 3.4, grads 3.4, AdamW states 6.7, activations 32.9 GB; peak at the forward/backward); "
            "the GPUs have 80 GB (execution.gpu_memory_gb)") in out
    assert "refuses" not in out


def test_run_refuses_a_7b_model_on_cpu_and_writes_nothing(capsys, llama7b_folder, data_dir, tmp_path):
    storage = tmp_path / "results"
    assert main(["run", *_paper(llama7b_folder, data_dir), "--storage", str(storage)]) == 2
    out, err = capsys.readouterr()
    assert "[study] needs: model: " in out and "(6.74B)" in out
    assert "study 'paper-first-lr' (hardware): 1 problem" in err
    assert "execution.gpus_per_trial: 0: fine-tuning" in err and "(6.74B parameters, over 1B) on CPU" in err
    assert "--set execution.gpus_per_trial=1" in err and "--set model=tiny" in err and "--force" in err
    assert not storage.exists()


def test_run_refuses_a_step_over_the_gpus_memory(capsys, llama7b_folder, data_dir, tmp_path):
    storage = tmp_path / "results"
    args = ["run", *_paper(llama7b_folder, data_dir, "--set", "execution.gpus_per_trial=1"), "--storage", str(storage)]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "needs: per trial: 358.3 GB per GPU at the largest step (chains.tqa_arc[0]: sft, 1 worker;" in out
    assert "chains.tqa_arc[0]: sft needs about 358.3 GB per GPU" in err  # the memory preflight's problem
    assert "it would fit with FSDP over 8 GPU workers" in err
    assert "or change: --set model=tiny" in err and "execution.gpu_memory_gb" in err and "--force" in err
    assert not storage.exists()


@pytest.mark.parametrize("gpus", [[], ["--set", "execution.gpus_per_trial=1"]])
def test_force_passes_the_refusal(gpus, capsys, llama7b_folder, data_dir, tmp_path, monkeypatch):
    """--force goes on past the preflight to the run itself (replaced here: no 7B model trains)."""
    import study.orchestrate as orchestrate

    reached = {}

    def stop(spec, study_dir, **kwargs):
        reached["spec"] = spec
        raise KeyboardInterrupt  # neither a result nor an error the CLI turns into an exit code

    monkeypatch.setattr(orchestrate, "_run_study", stop)
    with pytest.raises(KeyboardInterrupt):
        main(["run", *_paper(llama7b_folder, data_dir, *gpus), "--storage", str(tmp_path), "--force"])
    out = capsys.readouterr().out
    assert "[study] --force: started anyway: " in out
    assert reached["spec"].model.name == llama7b_folder


def test_cpu_refusal_threshold():
    def needs(params: int | None, on_gpu: bool = False) -> Needs:
        return Needs(model="m", on_gpu=on_gpu, gpus_per_trial=1.0 if on_gpu else 0.0, gpu_memory_gb=80, params=params)

    assert cpu_problem(needs(CPU_FINE_TUNE_LIMIT)) is None
    assert cpu_problem(needs(CPU_FINE_TUNE_LIMIT + 1)).path == "execution.gpus_per_trial"
    assert cpu_problem(needs(7_000_000_000, on_gpu=True)) is None
    assert cpu_problem(needs(None)) is None  # not counted: nothing to judge
    memory = [Problem("chains.a[0]", "sft needs about 100 GB")]
    assert [p.path for p in refusal(needs(10), memory)] == ["chains.a[0]", ""]
    assert refusal(needs(10), []) == []


def test_gated_detection_without_the_hub():
    def unreachable(name):
        raise ConnectionError("no network")

    assert gated_on_hub("meta-llama/Llama-2-7b-hf", ask_hub=unreachable) == Gated(True, "known gated prefixes")
    assert gated_on_hub("openai-community/gpt2", ask_hub=unreachable) == Gated(False, "known gated prefixes")
    assert gated_on_hub("some/model", ask_hub=lambda name: True) == Gated(True, "the Hub")
    assert gated_on_hub("meta-llama/x", ask_hub=lambda name: False) == Gated(False, "the Hub")
    assert gated_on_hub("tiny").gated is None


def test_a_gated_model_gets_the_login_command_the_installed_hub_provides(capsys, data_dir, monkeypatch):
    command = login_command()
    assert command == "hf auth login"  # huggingface_hub >= 1 ships `hf`, not `huggingface-cli`
    assert shutil.which("hf", path=str(Path(sys.executable).parent))  # the command exists in this environment
    monkeypatch.setattr(needs_module, "_hub_gated", lambda name: (_ for _ in ()).throw(OSError("offline")))
    assert main(["validate", "paper-first-lr", "--set", f"data_dir={data_dir}"]) == 0
    out = capsys.readouterr().out
    assert ("needs: access: gated on the Hugging Face Hub (known gated prefixes): accept its license at "
            "https://huggingface.co/meta-llama/Llama-2-7b-hf, then log in: hf auth login") in out


def test_the_tiny_model_needs_little_and_is_not_refused(capsys, data_dir, tmp_path):
    assert main(["validate", "demo", "--set", f"data_dir={data_dir}"]) == 0
    out = capsys.readouterr().out
    assert "needs: model: tiny, 362,816 parameters\n" in out
    assert "needs: per trial: " in out and "GB of RAM per CPU worker" in out
    assert "needs: work: 4 trials, 8 stage trainings after sharing (8 in the chains)," in out
    assert "refuses" not in out and "access:" not in out
