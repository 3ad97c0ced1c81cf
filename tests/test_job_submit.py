"""`ray job submit --working-dir .`: what the upload holds (fast), and a study submitted as a Ray
job to a head node on loopback, with its Parquet tables, Tune results, TensorBoard events and
the dashboard's job API (slow)."""

from __future__ import annotations

import csv
import json
import math
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.processes import end_processes

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Never uploaded (any depth): environments, VCS, caches, study outputs, weights.
NOT_UPLOADED_NAMES = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".cache", "_tune", "_ray_train",
                      "_models", "_work"}
NOT_UPLOADED_SUFFIXES = (".egg-info", ".safetensors", ".bin", ".pt", ".pyc")
UPLOAD_LIMIT = 5 * 2**20  # the code is ~0.6 MB; a .venv would be GBs, a results folder MBs


def _packaging():
    from ray._private.runtime_env import packaging

    return packaging


def _job_submit_rules() -> dict:
    """How `ray job submit` packs a working dir (ray.dashboard.modules.dashboard_sdk and
    ray._private.runtime_env.working_dir): .gitignore and .rayignore in every folder unless
    RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1, plus Ray's default excludes (.git, .venv, venv, __pycache__)."""
    from ray._private import ray_constants

    return {"include_gitignore": os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1",
            "excludes": ray_constants.get_runtime_env_default_excludes()}


def _pack(folder: Path, target: Path, *, include_gitignore: bool, excludes: list[str]) -> list[str]:
    _packaging().create_package(str(folder), target, include_gitignore=include_gitignore, excludes=excludes)
    with zipfile.ZipFile(target) as archive:
        return archive.namelist()


def _not_uploadable(names) -> list[str]:
    bad = []
    for name in names:
        parts = Path(name).parts
        if any(p in NOT_UPLOADED_NAMES or p.endswith(NOT_UPLOADED_SUFFIXES) for p in parts) or parts[0] == "results":
            bad.append(name)
    return bad


def _touch(path: Path, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_rayignore_alone_keeps_environments_vcs_caches_and_results_out(tmp_path):
    """With .gitignore and Ray's default excludes both off, .rayignore still leaves only code."""
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copy(REPO / ".rayignore", root / ".rayignore")
    kept = ["README.md", "pyproject.toml", "study/__init__.py", "study/presets/demo.yaml", "trainables/stages/sft.py",
            "analysis/results.py", "contract/plan.py", "tasks/arc.py", "tests/specs/valid_small.yaml",
            "bench/curvature.py", ".ci/run"]
    for name in kept:
        _touch(root / name)
    dropped = [".git/objects/ab/cdef", ".venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so",
               "venv/bin/python", ".env", "__pycache__/x.cpython-311.pyc", "study/__pycache__/cli.cpython-311.pyc",
               "chained_tuning_study.egg-info/PKG-INFO", ".pytest_cache/v/cache/nodeids", ".cache/models/tiny/x",
               "build/lib/study/cli.py", "dist/chained_tuning_study-0.1.0.tar.gz",
               "results/demo/evals/tqa_arc-0-abc.stage1.parquet",
               "runs/demo/_tune/demo/tqa_arc-0-abc/result.json", "runs/demo/_ray_train/t/checkpoint",
               "runs/demo/_models/tiny-123/model.safetensors", "runs/demo/_work/t/stage1/x",
               "weights/pytorch_model.bin", "weights/model.pt"]
    for name in dropped:
        _touch(root / name)
    names = _pack(root, tmp_path / "pkg.zip", include_gitignore=False, excludes=[])
    assert sorted(n for n in names if not n.endswith("/")) == sorted([*kept, ".rayignore"])


def test_repo_upload_is_code_only_and_small(tmp_path):
    """The real checkout, packed by Ray's own code with the rules `ray job submit` applies."""
    names = _pack(REPO, tmp_path / "repo.zip", **_job_submit_rules())
    assert _not_uploadable(names) == []
    for needed in ("contract/__init__.py", "tasks/__init__.py", "study/__init__.py", "study/cli.py",
                   "trainables/__init__.py", "analysis/__init__.py", "pyproject.toml", ".rayignore"):
        assert needed in names
    assert (tmp_path / "repo.zip").stat().st_size < UPLOAD_LIMIT


# --- a head node on loopback, a study submitted as a job (slow tier) ------------------------------

JOB_STUDY = """\
name: job_tiny
model: {name: tiny, max_length: 256}
tasks:
  toxigen_qa: {train_size: 32, eval_size: 30}
  arc_easy: {train_size: 32, eval_size: 20}
stage_defaults: {learning_rate: 3.0e-3, batch_size: 8, steps: 4}
chains:
  tqa_arc: [{task: toxigen_qa}, {task: arc_easy}]
seeds: [0]
"""
TQA_EVAL, ARC_EVAL, STEPS = 30, 20, 4
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LoopbackHead:
    """`ray start --head` on 127.0.0.1 with its own temp dir, ports and token, so it shares
    nothing with other Ray clusters on the machine. `stop` ends exactly its processes (by
    session id and by the token path in their environment): `ray stop` would end every Ray
    process of the machine."""

    def __init__(self):
        self.temp = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # short: Ray's unix sockets live under it
        self.token = secrets.token_hex(32)
        self.token_file = self.temp / "auth_token"
        self.token_file.write_text(self.token)
        self.env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "STUDY_DATA_DIR", "PYTHONDONTWRITEBYTECODE",
                     "RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES"):
            self.env.pop(name, None)
        (self.gcs_port, self.dashboard_port, client, agent, agent_grpc, metrics, runtime_env) = _free_ports(7)
        self.url = f"http://127.0.0.1:{self.dashboard_port}"
        self.args = ["start", "--head", "--num-cpus", "2", "--dashboard-host", "127.0.0.1",
                     "--temp-dir", str(self.temp), "--port", str(self.gcs_port),
                     "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port", str(client),
                     "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
                     "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
                     "--disable-usage-stats"]
        self.session_id: int | None = None

    def start(self) -> None:
        starter = subprocess.Popen([str(VENV_BIN / "ray"), *self.args], cwd=self.temp, env=self.env,
                                   start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.session_id = starter.pid  # every server it starts stays in this session
        out, _ = starter.communicate(timeout=180)
        assert starter.returncode == 0, f"ray start failed:\n{out[-4000:]}"

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "ray"), *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def get(self, path: str, token: str | None = "ours") -> tuple[int, object]:
        token = self.token if token == "ours" else token
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def wait_for_job(self, submission_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, info = self.get(f"/api/jobs/{submission_id}")
            if status == 200 and info["status"] in TERMINAL:
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"job {submission_id} not finished after {timeout}s: {info}\n{self.logs(submission_id)}")
            time.sleep(2)

    def logs(self, submission_id: str) -> str:
        status, body = self.get(f"/api/jobs/{submission_id}/logs")
        return body["logs"][-6000:] if status == 200 else f"(no logs: {status} {body})"

    def processes(self) -> list:
        import psutil

        own = {os.getpid(), os.getppid()}
        own_session = os.getsid(0)
        found = []
        for process in psutil.process_iter():
            try:
                if process.pid in own or os.getsid(process.pid) == own_session:
                    continue
                if os.getsid(process.pid) == self.session_id or \
                        process.environ().get("RAY_AUTH_TOKEN_PATH") == str(self.token_file):
                    found.append(process)  # job drivers run in sessions of their own: found by their env
            except (OSError, psutil.Error):
                continue
        return found

    def stop(self) -> None:
        try:
            end_processes(self.processes() if self.session_id else [])
        finally:
            shutil.rmtree(self.temp, ignore_errors=True)


def _tensorboard_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard event file (TFRecord framing: length, crc, Event proto, crc)."""
    from tensorboardX.proto import event_pb2

    data, offset, scalars = path.read_bytes(), 0, {}
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[offset + 12:offset + 12 + length])
        offset += 12 + length + 4
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def _unpacked(head: LoopbackHead, uri: str) -> Path:
    """Where the node unpacked a working-dir package (gcs://_ray_pkg_<hash>.zip)."""
    folder = head.temp / "session_latest" / "runtime_resources" / "working_dir_files" / \
        uri.removeprefix("gcs://").removesuffix(".zip")
    assert folder.is_dir(), folder
    return folder


@pytest.mark.slow
def test_study_runs_as_a_ray_job_from_the_working_dir(data_dir, tmp_path):
    import polars as pl

    study_file = tmp_path / "job_tiny.yaml"
    study_file.write_text(JOB_STUDY)
    storage = tmp_path / "results"
    packaging = _packaging()
    rules = _job_submit_rules()
    head = LoopbackHead()
    submission_id = f"study-job-{uuid.uuid4().hex[:8]}"
    try:
        begin = time.monotonic()
        head.start()
        print(f"\nhead node up in {time.monotonic() - begin:.1f} s")
        expected_uri = {packaging.get_uri_for_directory(str(REPO), **rules)}
        started = time.monotonic()
        submit = head.ray("job", "submit", "--address", head.url, "--submission-id", submission_id, "--no-wait",
                          "--working-dir", ".",
                          "--runtime-env-json", json.dumps({"env_vars": {"STUDY_DATA_DIR": str(data_dir)}}),
                          "--", "study", "run", str(study_file), "--storage", str(storage))
        expected_uri.add(packaging.get_uri_for_directory(str(REPO), **rules))  # in case a file changed meanwhile
        assert submit.returncode == 0, submit.stdout + submit.stderr
        info = head.wait_for_job(submission_id, timeout=300)
        wall = time.monotonic() - started
        assert info["status"] == "SUCCEEDED", head.logs(submission_id)
        job_seconds = (info["end_time"] - info["start_time"]) / 1000
        print(f"job {submission_id}: {job_seconds:.1f} s on the cluster, {wall:.1f} s from submit to SUCCEEDED")

        # The dashboard's job API and the CLI list it; without the token the API refuses.
        status, jobs = head.get("/api/jobs/")
        assert status == 200
        listed = {job.get("submission_id"): job for job in jobs}
        assert listed[submission_id]["status"] == "SUCCEEDED"
        assert listed[submission_id]["entrypoint"].startswith("study run ")
        assert head.get("/api/jobs/", token=None)[0] == 401
        assert head.get("/api/jobs/", token="0" * 64)[0] == 403
        job_list = head.ray("job", "list", "--address", head.url)
        assert job_list.returncode == 0 and submission_id in job_list.stdout, job_list.stdout + job_list.stderr

        # The upload: exactly the package Ray's rules make of this checkout, code only.
        uri = info["runtime_env"]["working_dir"]
        assert uri in expected_uri
        unpacked = _unpacked(head, uri)
        files = [p for p in unpacked.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert _not_uploadable(str(p.relative_to(unpacked)) for p in files) == []
        size = sum(p.stat().st_size for p in files)
        print(f"uploaded working dir: {len(files)} files, {size / 1e6:.2f} MB unpacked")
        assert size < UPLOAD_LIMIT and (unpacked / "study" / "cli.py").is_file()
        # Trials imported the engine from the uploaded copy (Python wrote its bytecode there):
        # chain.py is only imported inside Tune trials.
        assert list((unpacked / "trainables" / "__pycache__").glob("chain.*.pyc"))

        # Parquet results.
        study_dir = storage / "job_tiny"
        plans = json.loads((study_dir / "plans.json").read_text())
        assert len(plans) == 1
        trial_id = plans[0]["trial_id"]
        trials = pl.read_parquet(study_dir / "trials" / "*.parquet")
        assert trials.height == 2 and sorted(trials["stage"]) == [1, 2] and set(trials["trial_id"]) == {trial_id}
        evals = pl.read_parquet(study_dir / "evals" / "*.parquet")
        assert sorted(evals["stage"].unique()) == [0, 1, 2]
        assert pl.read_parquet(study_dir / "predictions" / "*.parquet").height == 3 * (TQA_EVAL + ARC_EVAL)
        assert pl.read_parquet(study_dir / "train_log" / "*.parquet").height == 2 * STEPS

        # Tune's per-trial results: result.json (every key), progress.csv, TensorBoard events.
        trial_dir = study_dir / "_tune" / "job_tiny" / trial_id
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert [r["stage"] for r in results] == [0, 1, 2]
        for r in results:
            assert 0 <= r["toxigen_qa/accuracy"] <= 1 and 0 <= r["arc_easy/accuracy"] <= 1
        assert all(math.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in results[1:])
        with open(trial_dir / "progress.csv", newline="") as handle:
            progress = list(csv.DictReader(handle))
        assert [int(row["stage"]) for row in progress] == [0, 1, 2]
        assert [float(row["toxigen_qa/accuracy"]) for row in progress] == \
            pytest.approx([r["toxigen_qa/accuracy"] for r in results])
        assert all(math.isfinite(float(row["train_loss"])) for row in progress[1:])  # same keys in every report
        events = list(trial_dir.glob("events.out.tfevents.*"))
        assert len(events) == 1
        scalars = _tensorboard_scalars(events[0])
        assert [v for _, v in scalars["ray/tune/stage"]] == [0, 1, 2]
        assert [v for _, v in scalars["ray/tune/arc_easy/accuracy"]] == \
            pytest.approx([r["arc_easy/accuracy"] for r in results])
        assert scalars["ray/tune/train_loss"] == [
            (r["training_iteration"], pytest.approx(r["train_loss"], rel=1e-6)) for r in results[1:]]

        # Where a job's Python finds `study`: the uploaded working dir (first on PYTHONPATH), not the checkout.
        probe_id = f"study-import-{uuid.uuid4().hex[:8]}"
        probe = head.ray("job", "submit", "--address", head.url, "--submission-id", probe_id, "--no-wait",
                         "--working-dir", ".", "--", "python", "-c",
                         "import study, trainables; print('STUDY_FROM', study.__file__); "
                         "print('TRAINABLES_FROM', trainables.__file__)")
        assert probe.returncode == 0, probe.stdout + probe.stderr
        begin = time.monotonic()
        probe_info = head.wait_for_job(probe_id, timeout=120)
        print(f"import probe job: {time.monotonic() - begin:.1f} s")
        assert probe_info["status"] == "SUCCEEDED", head.logs(probe_id)
        # (its own package: others may have edited the checkout since the first job)
        probe_dir = _unpacked(head, probe_info["runtime_env"]["working_dir"]).resolve()
        logs = head.logs(probe_id)
        assert f"STUDY_FROM {probe_dir / 'study' / '__init__.py'}" in logs, logs
        assert f"TRAINABLES_FROM {probe_dir / 'trainables' / '__init__.py'}" in logs, logs
    finally:
        begin = time.monotonic()
        head.stop()
        print(f"head node stopped in {time.monotonic() - begin:.1f} s")
    assert head.processes() == []
