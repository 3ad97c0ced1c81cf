"""Stage claims through Ray (trainables.stage_claims) on a real local cluster: one holder at a
time, waiters served in turn, a killed holder's claim freed through Ray, flock without a coordinator."""

from __future__ import annotations

import fcntl
import json
import os
import signal

import pytest

from contract.layout import StudyLayout
from contract.plan import RunInfo
from trainables.stage_claims import coordinating
from trainables.stage_store import StageStore

pytestmark = pytest.mark.slow


def _holder_class(ray):
    @ray.remote(num_cpus=0)
    class Holder:
        """A process that takes a stage's claim and keeps it until told (or killed)."""

        def __init__(self, study: str):
            self.study, self.held = study, None

        def pid(self) -> int:
            return os.getpid()

        def take(self, key: str) -> dict:
            self.held = StageStore(self.study, RunInfo("r")).claim(key)
            entry = self.held.__enter__()
            return json.loads(entry.paths.holder.read_text())

        def drop(self) -> None:
            self.held.__exit__(None, None, None)

    return Holder


def test_a_stage_goes_to_one_holder_at_a_time_and_a_killed_holders_claim_is_freed(ray_cluster, tmp_path):
    """a takes stage k; b and c wait (their requests stay pending, the coordinator names a),
    while d takes another key; a releases: one waiter gets k; SIGKILL that waiter's process
    (no release call is ever made): Ray reports its token dead and the last waiter gets k."""
    ray = ray_cluster
    Holder = _holder_class(ray)
    with coordinating(tmp_path) as coordinator:
        a, b, c, d = (Holder.remote(str(tmp_path)) for _ in range(4))
        pids = {name: ray.get(h.pid.remote()) for name, h in (("a", a), ("b", b), ("c", c))}
        facts = ray.get(a.take.remote("k"))
        assert facts["pid"] == pids["a"] and facts["node"] == ray.get_runtime_context().get_node_id()
        waiting = {"b": b.take.remote("k"), "c": c.take.remote("k")}
        ray.get(d.take.remote("other"))  # keys are independent
        ready, _ = ray.wait(list(waiting.values()), timeout=3)
        assert not ready, "a waiter was granted a held stage"
        assert ray.get(coordinator.holders.remote())["k"]["pid"] == pids["a"]

        ray.get(a.drop.remote())
        [first], _ = ray.wait(list(waiting.values()), timeout=60)
        winner = next(name for name, ref in waiting.items() if ref == first)
        loser = "c" if winner == "b" else "b"
        assert ray.get(first)["pid"] == pids[winner]
        assert ray.get(coordinator.holders.remote())["k"]["pid"] == pids[winner]

        os.kill(pids[winner], signal.SIGKILL)  # dies holding "k"
        assert ray.get(waiting[loser], timeout=60)["pid"] == pids[loser]
        assert ray.get(coordinator.holders.remote())["k"]["pid"] == pids[loser]
        holder_file = StudyLayout(tmp_path).stage("k").holder
        assert json.loads(holder_file.read_text())["pid"] == pids[loser]


def test_without_a_coordinator_a_ray_process_claims_by_flock(ray_cluster, tmp_path):
    """Connected to Ray, but no `study run` coordinates this study: the claim is the flock."""
    Holder = _holder_class(ray_cluster)
    holder = Holder.remote(str(tmp_path))
    ray_cluster.get(holder.take.remote("k"))
    with open(StudyLayout(tmp_path).stage("k").lock, "w") as lock:
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    ray_cluster.get(holder.drop.remote())
    with open(StudyLayout(tmp_path).stage("k").lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_second_coordinator_for_the_same_study_is_refused(ray_cluster, tmp_path, monkeypatch):
    import trainables.stage_claims as stage_claims

    monkeypatch.setattr(stage_claims, "START_TIMEOUT_S", 1.0)
    with coordinating(tmp_path):
        with pytest.raises(RuntimeError, match="another `study run` of this study"):
            with coordinating(tmp_path):
                pass
    with coordinating(tmp_path):  # freed once the first run's block ended
        pass
