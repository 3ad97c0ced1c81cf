"""A study on a two-node Ray cluster on this machine: stages shared across nodes, and the second
node lost mid-study.

The cluster is two `ray start` nodes with their own temp dirs, on loopback addresses that Ray
takes as they are (127.0.0.2 for the head, 127.0.0.3 for the second node; Ray replaces
127.0.0.1 by the machine's external address as soon as multi-node is allowed). Each node has
one CPU and trials take one, so the two trials of the study run one on each node; a custom
resource on each node (head_node, second_node) tells the test which node id is which.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml

from tests.processes import end_processes

pytestmark = pytest.mark.slow

HEAD_IP, SECOND_IP = "127.0.0.2", "127.0.0.3"
TABLES = ("trials", "evals", "predictions", "train_log", "weights")
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _cluster_env() -> dict[str, str]:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",  # allow a second node on this machine
           "RAY_AUTH_MODE": "token",  # Ray 2.60's token auth, on every node and the driver
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    return env


def _start_node(env: dict[str, str], *args: str) -> None:
    subprocess.run([RAY, "start", "--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats",
                    *args], env=env, check=True, capture_output=True, timeout=180)


def _processes_under(root: Path, only: str | None = None) -> list[psutil.Process]:
    """The Ray processes of the nodes whose temp dirs are under `root` (those naming it on their
    command line, e.g. the raylet, and everything they started), optionally only those of the
    raylet whose temp dir is `only`."""
    mark = str(root / only) + "/" if only else str(root)
    found: set[psutil.Process] = set()
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.pid == os.getpid() or not any(mark in arg for arg in cmdline):
            continue
        if only and not any("raylet/raylet" in arg for arg in cmdline):
            continue
        found.add(process)
        try:
            found.update(process.children(recursive=True))
        except psutil.Error:
            pass
    return list(found)


def _node_ids(address: str, env: dict[str, str]) -> dict[str, str]:
    code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
            "print(json.dumps({n['NodeID']: sorted(n['Resources']) for n in ray.nodes() if n['Alive']}))" % address)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True,
                         timeout=120).stdout
    nodes = json.loads(out.strip().splitlines()[-1])
    return {name: node for node, resources in nodes.items() for name in ("head_node", "second_node")
            if name in resources}


def _wait_for(predicate, timeout: float, what: str, driver: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if driver.poll() is not None:
            raise AssertionError(f"the study ended before {what}:\n{driver.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _records(study_dir: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text())
            for path in (study_dir / "stages").glob("*/record.json") if not path.parent.name.startswith("base-")}


def test_two_nodes_share_first_stages_and_the_study_survives_losing_the_second(data_dir, tmp_path):
    """Chain toxigen_qa → arc_easy → toxigen_qa (30 steps) × stage2.learning_rate {3e-3, 1e-3}:
    two trials, one per node, sharing stage 1. The stage is trained once (one record; the other
    trial's row is `reused`, with the trainer's trial and node). Once the second node has stored
    a stage of its own and holds the claim of its third, its raylet and workers are SIGKILLed:
    Ray frees the claim, Tune retries the trial on the head node, which reuses what the second
    node stored and trains the third stage; the study completes with one row per trial and stage
    (and one train_log row per step), having trained 5 distinct stages 5 times."""
    root = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))  # short: Ray's socket paths stay < 108 bytes
    env = _cluster_env()
    port = _free_port(HEAD_IP)
    address = f"{HEAD_IP}:{port}"
    study_dir = tmp_path / "results" / "nodes"
    study_file = tmp_path / "nodes.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": "nodes", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}, "arc_easy": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"learning_rate": 3e-3, "batch_size": 4, "steps": 2},
        "chains": {"tqa_arc_tqa": [{"task": "toxigen_qa"}, {"task": "arc_easy"}, {"task": "toxigen_qa", "steps": 30}]},
        "grid": {"stage2.learning_rate": [3e-3, 1e-3]},
        "data_dir": str(data_dir), "storage": str(tmp_path / "results"),
        "execution": {"executor": "function", "cpus_per_trial": 1, "max_failures": 1},
    }))
    driver = None
    killed: dict = {}
    try:
        _start_node(env, "--head", f"--port={port}", f"--node-ip-address={HEAD_IP}", f"--temp-dir={root / 'h'}",
                    "--include-dashboard=false", '--resources={"head_node": 1}')
        _start_node(env, f"--address={address}", f"--node-ip-address={SECOND_IP}", f"--temp-dir={root / 'w'}",
                    '--resources={"second_node": 1}')
        nodes = _node_ids(address, env)
        assert set(nodes) == {"head_node", "second_node"}, nodes
        head, second = nodes["head_node"], nodes["second_node"]

        driver = subprocess.Popen([sys.executable, "-m", "study", "run", str(study_file), "--no-report"],
                                  env={**env, "RAY_ADDRESS": address}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)

        def second_node_holds_its_last_stage() -> bool:
            """The second node stored a stage and now holds the claim of one not stored yet."""
            if not any(r.get("trained_on") == second for r in _records(study_dir).values()):
                return False
            for folder in (study_dir / "stages").glob("*"):
                try:
                    holder = json.loads((folder / "holder.json").read_text())
                except (FileNotFoundError, json.JSONDecodeError):
                    continue
                if holder["node"] == second and not (folder / "record.json").exists() \
                        and not folder.name.startswith("base-"):
                    killed.update(holder, key=folder.name)
                    return True
            return False

        _wait_for(second_node_holds_its_last_stage, 600, "the second node holding its third stage", driver)
        raylet_and_workers = _processes_under(root, only="w")
        assert killed["pid"] in {p.pid for p in raylet_and_workers}  # the holder is one of the second node's workers
        for process in raylet_and_workers:
            process.kill()
        out, _ = driver.communicate(timeout=900)
        assert driver.returncode == 0, out
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, 9)
        end_processes(_processes_under(root))
        shutil.rmtree(root, ignore_errors=True)

    assert "stage trainings: 5 executed" in out, out
    assert not list((study_dir / "stages").glob("*/.lock")), "a claim went through flock, not the coordinator"
    records = _records(study_dir)
    assert len(records) == 5 and all(r["status"] == "finished" for r in records.values())
    assert records[killed["key"]]["trained_on"] == head  # retrained on the head after the loss
    assert {r["trained_on"] for r in records.values()} == {head, second}

    trials = pl.read_parquet(study_dir / "trials" / "*.parquet").sort("trial_id", "stage")
    assert trials.height == 6 and trials["status"].to_list() == ["finished"] * 6
    first = trials.filter(pl.col("stage") == 1)
    assert first["stage_key"].n_unique() == 1 and first["reused"].sort().to_list() == [False, True]
    assert first["trained_by"].n_unique() == 1 and first["trained_on"].n_unique() == 1
    assert set(trials["trained_on"]) == {head, second}
    # trained_by names the trial that trained each stage, trained_on its node: as the records say.
    for row in trials.iter_rows(named=True):
        assert (row["trained_by"], row["trained_on"]) == (records[row["stage_key"]]["trained_by"],
                                                          records[row["stage_key"]]["trained_on"])
    for table in TABLES:
        frame = pl.read_parquet(study_dir / table / "*.parquet")
        key = [c for c in ("trial_id", "stage", "eval_task", "group", "metric", "example_id", "step")
               if c in frame.columns]
        assert frame.select(key).is_unique().all(), f"duplicate rows in {table}"
    steps = pl.read_parquet(study_dir / "train_log" / "*.parquet").filter(pl.col("stage") == 3)
    assert steps.group_by("trial_id").agg(pl.col("step").sort())["step"].to_list() == [list(range(1, 31))] * 2
