"""Secrets of the environment never appear in what the engine writes (contract/secrets.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract.secrets import RedactedError, redact, secret_values, secrets_redacted

REPO = Path(__file__).resolve().parents[1]
HF = "hf_SentinelHuggingFace1234567890"
HUB = "hf_SentinelHubToken0987654321"
RAY = "SentinelRayAuthToken5555"
SENTINELS = {"HF_TOKEN": HF, "HUGGING_FACE_HUB_TOKEN": HUB, "RAY_AUTH_TOKEN": RAY}


def test_which_variables_are_secrets():
    environ = {**SENTINELS, "WANDB_API_KEY": "k" * 12, "AWS_SECRET_ACCESS_KEY": "s" * 40, "FOO_KEY": "1",
               "PATH": "/usr/bin:/bin", "STUDY_DATA_DIR": "/data/mirror"}
    assert set(secret_values(environ)) == {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RAY_AUTH_TOKEN", "WANDB_API_KEY",
                                           "AWS_SECRET_ACCESS_KEY"}  # FOO_KEY=1 is too short to blank every "1"
    text = f"GET https://hf.co/api?token={HF} with {RAY} and path /usr/bin"
    assert redact(text, environ) == "GET https://hf.co/api?token=<$HF_TOKEN> with <$RAY_AUTH_TOKEN> and path /usr/bin"


def test_an_exception_quoting_a_secret_leaves_redacted_and_others_unchanged(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF)
    with pytest.raises(RedactedError) as info:
        with secrets_redacted():
            raise ValueError(f"401 Unauthorized for token {HF}")
    message = str(info.value)
    assert HF not in message and "<$HF_TOKEN>" in message
    assert "ValueError: 401 Unauthorized" in message and "Traceback" in message  # type and traceback kept as text
    original = KeyError("no secret here")
    with pytest.raises(KeyError) as info:
        with secrets_redacted():
            raise original
    assert info.value is original


def test_a_trial_that_fails_quoting_a_secret_reaches_tune_redacted(monkeypatch):
    from trainables.tune_trial import chain_trial

    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", HUB)

    def plan_for(config):
        raise OSError(f"could not read https://huggingface.co/x (Authorization: Bearer {HUB})")

    with pytest.raises(RedactedError) as info:
        chain_trial({"chain": "c", "seed": 0}, plan_for=plan_for, executor="function", cpus_per_worker=1,
                    gpus_per_worker=0, max_failures=0)
    assert HUB not in str(info.value) and "Bearer <$HUGGING_FACE_HUB_TOKEN>" in str(info.value)


def _scan(folder: Path) -> list[str]:
    """Every file under `folder` (bytes, Parquet and pickles included) that holds a sentinel."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {name}" for name, value in SENTINELS.items() if value.encode() in data]
    return found


def test_the_scan_finds_a_planted_secret(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "part.parquet").write_bytes(b"PAR1\x00" + RAY.encode() + b"\x00")
    assert _scan(tmp_path) == [f"{tmp_path / 'a' / 'b' / 'part.parquet'}: RAY_AUTH_TOKEN"]


@pytest.mark.slow
def test_a_whole_study_writes_no_secret(data_dir, tmp_path):
    """`study run`, `study report` and `study status` as a user runs them, with sentinel tokens in
    the environment of the driver and of the Ray cluster it starts: no file of the study folder
    (plans, study.yaml, Parquet, records, Tune's and the report's files) and nothing printed holds one."""
    study_file = tmp_path / "s.yaml"
    study_file.write_text(
        "name: secrets\nmodel: {name: tiny, max_length: 256}\n"
        "tasks: {toxigen_qa: {train_size: 16, eval_size: 16}, arc_easy: {train_size: 16, eval_size: 16}}\n"
        "stage_defaults: {learning_rate: 1.0e-3, batch_size: 4, steps: 2}\n"
        "chains: {tqa_arc: [{task: toxigen_qa}, {task: arc_easy}]}\n"
        f"storage: {tmp_path / 'results'}\n")
    env = {**os.environ, **SENTINELS, "STUDY_DATA_DIR": str(data_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)  # a cluster of its own, started with the sentinel auth token
    printed = ""
    for command in (["run", str(study_file)], ["report", str(tmp_path / "results" / "secrets")],
                    ["status", str(tmp_path / "results" / "secrets")]):
        proc = subprocess.run([sys.executable, "-m", "study", *command], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        printed += proc.stdout + proc.stderr
    study_dir = tmp_path / "results" / "secrets"
    assert (study_dir / "plans.json").is_file() and list((study_dir / "evals").glob("*.parquet"))
    assert _scan(study_dir) == []
    assert not [name for name, value in SENTINELS.items() if value in printed]
