"""Secure model loading (safetensors only from local folders, no custom code unless trusted)
and, in the slow tier, the local cluster's network exposure (loopback only, token auth on)."""

from __future__ import annotations

import json
import os
import pickle
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.processes import end_processes

from trainables.models import UnsafeCheckpointError, load_model_and_tokenizer, save_checkpoint
from trainables.stages.reward_model import load_reward_model

REPO = Path(__file__).resolve().parents[1]


def _load_causal_lm(path, **kwargs):
    return load_model_and_tokenizer(str(path), dtype="float32", **kwargs)


def _load_reward(path, **kwargs):
    return load_reward_model(str(path), model_dtype="float32", **kwargs)


LOADERS = [pytest.param(_load_causal_lm, id="causal_lm"), pytest.param(_load_reward, id="reward_model")]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "</s>": 1, "a": 2, "b": 3, "c": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")


def _llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=16, eos_token_id=1, pad_token_id=1)
    return LlamaForCausalLM(config)


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    """A checkpoint as this engine writes it (safetensors + tokenizer)."""
    return save_checkpoint(_llama(), _tokenizer(), tmp_path / "stage1")


@pytest.fixture()
def isolated_remote_code(tmp_path, monkeypatch):
    """Where transformers copies trusted custom code: a temporary folder, not ~/.cache."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # init_hf_modules appends to it
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("transformers_modules"):
            del sys.modules[name]


@pytest.mark.parametrize("load", LOADERS)
def test_engine_checkpoints_load(load, checkpoint):
    model, tokenizer = load(checkpoint)
    assert tokenizer.pad_token == "</s>"
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("load", LOADERS)
def test_pickle_only_checkpoint_is_refused_without_unpickling(load, checkpoint, tmp_path):
    """A folder whose weights are a pickle (pytorch_model.bin) is refused before anything reads it."""
    marker = tmp_path / "unpickled.txt"

    class Payload:  # unpickling this calls open(marker, "w"): the file appears iff it was unpickled
        def __reduce__(self):
            return open, (str(marker), "w")

    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeCheckpointError) as info:
        load(checkpoint)
    message = str(info.value)
    assert str(checkpoint) in message and "pytorch_model.bin" in message and "safetensors" in message
    assert not marker.exists()
    # The payload is live: unpickling it is what the loader avoided.
    pickle.loads((checkpoint / "pytorch_model.bin").read_bytes()).close()
    assert marker.exists()


@pytest.mark.parametrize("load", LOADERS)
def test_folder_without_weights_is_refused_with_a_clear_error(load, checkpoint):
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(UnsafeCheckpointError, match="no model.safetensors.*no weights at all"):
        load(checkpoint)


def _write_custom_model_code(folder: Path, marker: Path) -> None:
    """Turn a checkpoint into one whose config names its own Python classes (auto_map)."""
    (folder / "custom_llama.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        from transformers import (AutoModel, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification,
                                  LlamaModel)

        Path({str(marker)!r}).write_text("custom model code ran")


        class CustomConfig(LlamaConfig):
            model_type = "custom_llama"


        class CustomModel(LlamaModel):
            config_class = CustomConfig


        class CustomForCausalLM(LlamaForCausalLM):
            config_class = CustomConfig


        class CustomForSequenceClassification(LlamaForSequenceClassification):
            config_class = CustomConfig


        AutoModel.register(CustomConfig, CustomModel, exist_ok=True)  # the classification head builds its body through AutoModel
    """))
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom_llama"
    config["auto_map"] = {"AutoConfig": "custom_llama.CustomConfig",
                          "AutoModelForCausalLM": "custom_llama.CustomForCausalLM",
                          "AutoModelForSequenceClassification": "custom_llama.CustomForSequenceClassification"}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("load", LOADERS)
def test_custom_model_code_runs_only_with_trust_remote_code(load, checkpoint, tmp_path, isolated_remote_code):
    marker = tmp_path / "model_code_ran.txt"
    _write_custom_model_code(checkpoint, marker)
    with pytest.raises(ValueError, match="trust_remote_code"):
        load(checkpoint)
    assert not marker.exists()
    model, _ = load(checkpoint, trust_remote_code=True)  # the opt-in reaches from_pretrained
    assert marker.exists() and type(model).__name__.startswith("Custom")


@pytest.mark.parametrize("load", LOADERS)
def test_custom_tokenizer_code_runs_only_with_trust_remote_code(load, checkpoint, tmp_path, isolated_remote_code):
    marker = tmp_path / "tokenizer_code_ran.txt"
    (checkpoint / "custom_tokenizer.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        from transformers import PreTrainedTokenizerFast

        Path({str(marker)!r}).write_text("custom tokenizer code ran")


        class CustomTokenizerFast(PreTrainedTokenizerFast):
            pass
    """))
    settings = json.loads((checkpoint / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = "CustomTokenizerFast"
    settings["auto_map"] = {"AutoTokenizer": [None, "custom_tokenizer.CustomTokenizerFast"]}
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(settings))
    try:
        _, tokenizer = load(checkpoint)  # refused, or served by transformers' own Llama tokenizer class
        assert type(tokenizer).__name__ != "CustomTokenizerFast"
    except ValueError as exc:
        assert "trust_remote_code" in str(exc)
    assert not marker.exists()
    _, tokenizer = load(checkpoint, trust_remote_code=True)
    assert marker.exists() and type(tokenizer).__name__ == "CustomTokenizerFast"


# --- the local cluster started by study.cluster.connect (slow tier) -----------------------------

LOOPBACK_ADDRESSES = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}

CONNECT_SCRIPT = """
import json, os, sys
if sys.argv[1] == "ray-imported-first":
    import ray  # as in a test session or a notebook: Ray has read its settings before connect()
from study.cluster import connect
where = connect(num_cpus=1, dashboard=True)
import ray
from ray._private.authentication.authentication_utils import is_token_auth_enabled
print(json.dumps({"where": where, "gcs": ray.get_runtime_context().gcs_address,
                  "auth_mode": os.environ.get("RAY_AUTH_MODE"), "token_auth": is_token_auth_enabled()}), flush=True)
sys.stdin.readline()
ray.shutdown()
"""


def _http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _listening(processes) -> set[tuple[str, int, str]]:
    import psutil

    found = set()
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port, process.name()))
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("order", ["connect-first", "ray-imported-first"])
def test_connect_starts_a_loopback_only_cluster_with_token_auth(order, tmp_path):
    """Every socket the new cluster listens on is loopback; the dashboard wants the token; a
    `ray start` cluster advertised on this machine is not attached to."""
    import psutil

    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's unix sockets live under it
    token = secrets.token_hex(32)
    token_file = tmp_path / "auth_token"
    token_file.write_text(token)
    # What `ray start` leaves for a bare ray.init() to find: connect() must not follow it.
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_TOKEN_PATH": str(token_file), "PYTHONPATH": str(REPO)}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(name, None)  # connect() itself must choose loopback and keep Ray's token default
    driver = subprocess.Popen([sys.executable, "-c", CONNECT_SCRIPT, order], cwd=REPO, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cluster: list = []
    try:
        line = driver.stdout.readline()
        assert line, f"connect() failed:\n{driver.stderr.read() if driver.poll() is not None else '(still running)'}"
        info = json.loads(line)
        gcs_host, gcs_port = info["gcs"].rsplit(":", 1)
        dashboard = info["where"].rsplit("dashboard ", 1)[-1]
        dashboard_port = int(dashboard.rsplit(":", 1)[-1])
        assert info["where"].startswith("local Ray cluster on 127.0.0.1") and gcs_host == "127.0.0.1"
        assert gcs_port != "9"  # a new cluster, not the advertised one

        # Every process of the cluster descends from the driver (gcs_server, raylet, dashboard,
        # agents, workers). The agents come up shortly after ray.init returns: wait for the raylet's.
        root = psutil.Process(driver.pid)
        deadline = time.monotonic() + 30
        while True:
            cluster = [root, *root.children(recursive=True)]
            sockets = _listening(cluster)
            names = {name for _, _, name in sockets}
            if {"gcs_server", "raylet", "ray::DashboardAgent"} <= names or time.monotonic() > deadline:
                break
            time.sleep(1)
        ports = {port for _, port, _ in sockets}
        assert int(gcs_port) in ports and dashboard_port in ports, sockets
        assert {"gcs_server", "raylet", "ray::DashboardAgent"} <= names, names
        exposed = sorted(s for s in sockets if s[0] not in LOOPBACK_ADDRESSES)
        assert exposed == [], f"listening beyond loopback: {exposed}"

        assert info["token_auth"] is True and info["auth_mode"] == "token"
        jobs = f"{dashboard}/api/jobs/"
        assert _http_status(jobs, None) == 401
        assert _http_status(jobs, "0" * 64) == 403
        assert _http_status(jobs, token) == 200
    finally:
        if driver.poll() is None:
            driver.stdin.write("\n")
            driver.stdin.flush()
            try:
                driver.wait(timeout=60)
            except subprocess.TimeoutExpired:
                driver.kill()
        leftover = [p for p in cluster if p.is_running() and p.pid != driver.pid]
        end_processes(leftover, timeout=10)
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
