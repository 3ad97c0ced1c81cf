"""Stage claims: one holder per stage_key at a time, on every node of the cluster.

A trial trains or measures a stage only while it holds the stage's claim (trainables.stage_store
`StageStore.claim`); a second trial that wants the same stage waits, then reuses what the first
stored. Two ways to claim, chosen per process:

- **Through Ray** (a `study run` on a Ray cluster, one node or many). `study.orchestrate` starts a
  `ClaimCoordinator` actor for the run, named after the study folder (`coordinator_name`), and
  every trial's process finds it by that name. The coordinator grants a stage_key to one holder
  at a time; a waiter's `acquire` is a coroutine awaiting a condition that each release
  notifies (the waiting trial blocks in `ray.get`, nothing spins). Nothing depends on the shared
  filesystem's locks, which on cluster filesystems hold across nodes only with the right mount
  options (Lustre `-o flock`, NFS setups that lock node-locally) and on object stores not at all.
- **By flock** on `stages/<key>/.lock`, the fallback where no coordinator runs: a process not
  connected to Ray (the chain called directly: tests, notebooks, scripts) or connected to one
  where no `study run` started a coordinator for the study. It coordinates the processes of one
  machine, and of several only on a filesystem whose flock holds across nodes.

How a dead holder's claim is released, through Ray and not a file: every holding process starts
one `HolderToken` actor (0 CPUs, on its own node), which it owns. Ray's ownership rule ends an
actor whose owner died, whether the process was killed or its node was lost (the raylet reports
a dead worker at once; a lost node once the GCS's health checks give up on it), and the
coordinator, which keeps a call to the token that never returns, gets ActorDiedError from it
and frees the dead holder's claims (and drops its pending requests). Ray's other ways to ask
about a process (`ray.util.state.list_workers`, `ray.nodes()`) answer only when asked, so they
would need polling, and the state API needs the dashboard, which the engine may start without.

Why the coordinator is not detached: it is owned by the `study run` driver and pinned to the
driver's node, so it lives exactly as long as the run (Tune's trial actors are the driver's too:
when the driver dies, every holder dies with it) and leaves nothing behind on a long-lived
cluster. Claims are only meaningful within a run: what was trained is in the stage records on
disk, which a `--resume` reads with a fresh coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from contract.content_hash import content_hash

COORDINATOR_NAMESPACE = "study_stage_claims"
"""The Ray namespace of every coordinator: a trial finds its study's one whatever its job's namespace."""
START_TIMEOUT_S = 60.0
"""How long `coordinating` waits for a previous run's coordinator to be gone (a driver killed
just before `--resume`: Ray frees the name once it has noticed the death)."""


def coordinator_name(study_dir: str | Path) -> str:
    """The coordinator's name for a study folder: the same on every node (plans carry the same
    study_dir string to every trial), distinct for distinct studies."""
    return f"stage-claims-{content_hash(str(Path(study_dir)))}"


def current_node() -> str:
    """The node this process runs on: its Ray node id when connected to Ray (`ray list nodes`
    names it), else the host name."""
    ray = _connected_ray()
    return ray.get_runtime_context().get_node_id() if ray is not None else socket.gethostname()


def holder_facts() -> dict[str, Any]:
    """Who holds a claim (stored in holder.json and with the coordinator's grant)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "node": current_node(), "since": time.time()}


# ---------------------------------------------------------------- the actors


class ClaimCoordinator:
    """Grants stage keys, one holder each (a Ray async actor; `coordinating` starts it)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, dict[str, Any]]] = {}  # key -> (holder id, holder facts)
        self._dead: set[str] = set()
        self._watches: dict[str, asyncio.Task] = {}
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made inside the actor's event loop
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self, key: str, holder: str, token: Any, facts: dict[str, Any]) -> bool:
        """Wait until `key` is free, then grant it to `holder`; False if `holder` died meanwhile."""
        self._watch(holder, token)
        changed = self._condition()
        async with changed:
            if self._held.get(key, ("",))[0] == holder:
                raise RuntimeError(f"{holder} already holds stage {key} (claims are not re-entrant)")
            await changed.wait_for(lambda: key not in self._held or holder in self._dead)
            if holder in self._dead:
                return False
            self._held[key] = (holder, facts)
            return True

    async def release(self, key: str, holder: str) -> None:
        changed = self._condition()
        async with changed:
            if self._held.get(key, ("",))[0] == holder:
                del self._held[key]
                changed.notify_all()

    def holders(self) -> dict[str, dict[str, Any]]:
        """stage key -> the facts of its holder (for `study status`-like views and tests)."""
        return {key: facts for key, (_, facts) in self._held.items()}

    def ready(self) -> bool:
        return True

    def _watch(self, holder: str, token: Any) -> None:
        if holder not in self._watches:
            self._watches[holder] = asyncio.get_running_loop().create_task(self._await_death(holder, token))

    async def _await_death(self, holder: str, token: Any) -> None:
        import ray

        try:
            await token.wait.remote()
        except ray.exceptions.RayActorError:  # the holder process (or its node) is gone
            pass
        changed = self._condition()
        async with changed:
            self._dead.add(holder)
            for key in [k for k, (h, _) in self._held.items() if h == holder]:
                del self._held[key]
            changed.notify_all()


class HolderToken:
    """Lives as long as the process that created (owns) it; its `wait` never returns."""

    async def wait(self) -> None:
        await asyncio.Event().wait()


# ---------------------------------------------------------------- the driver's side


@contextlib.contextmanager
def coordinating(study_dir: str | Path) -> Iterator[Any]:
    """Run a coordinator for the study while the block runs (study.orchestrate, around Tune).
    Needs a connected Ray. Refuses to start beside a live coordinator of the same study."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = coordinator_name(study_dir)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(ClaimCoordinator).options(
        name=name, namespace=COORDINATOR_NAMESPACE, num_cpus=0, max_restarts=0, max_concurrency=10_000,
        scheduling_strategy=here)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            coordinator = actor.remote()
            break
        except ValueError:  # the name is taken: a previous run's coordinator Ray has not freed yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"a stage-claim coordinator for {study_dir} is still running "
                                   f"(Ray actor {name!r} in namespace {COORDINATOR_NAMESPACE!r}): "
                                   "is another `study run` of this study running?") from None
            time.sleep(0.5)
    ray.get(coordinator.ready.remote())
    try:
        yield coordinator
    finally:
        ray.kill(coordinator)


# ---------------------------------------------------------------- the holder's side


@contextlib.contextmanager
def claim(study_dir: str | Path, key: str, lock_path: Path) -> Iterator[None]:
    """Hold stage `key` for as long as the block runs: through the study's coordinator when one
    runs in the connected Ray cluster, else by flock on `lock_path`."""
    coordinator = _coordinator(study_dir)
    if coordinator is None:
        with _flock(lock_path):
            yield
    else:
        with _ray_claim(coordinator, key):
            yield


def _connected_ray():
    import sys

    ray = sys.modules.get("ray")  # a process that never imported Ray is not connected to it
    return ray if ray is not None and ray.is_initialized() else None


_coordinators: dict[str, Any] = {}
_tokens: dict[str, Any] = {}  # worker id -> this process's HolderToken


def _coordinator(study_dir: str | Path) -> Any | None:
    ray = _connected_ray()
    if ray is None:
        return None
    name = coordinator_name(study_dir)
    if name not in _coordinators:
        try:
            _coordinators[name] = ray.get_actor(name, namespace=COORDINATOR_NAMESPACE)
        except ValueError:  # no `study run` coordinates this study: flock
            return None
    return _coordinators[name]


def _token(ray, holder: str) -> Any:
    if holder not in _tokens:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        _tokens[holder] = ray.remote(HolderToken).options(num_cpus=0, max_restarts=0,
                                                          scheduling_strategy=here).remote()
    return _tokens[holder]


@contextlib.contextmanager
def _ray_claim(coordinator: Any, key: str) -> Iterator[None]:
    import ray

    holder = ray.get_runtime_context().get_worker_id()
    request = coordinator.acquire.remote(key, holder, _token(ray, holder), holder_facts())
    try:
        granted = ray.get(request)
    except BaseException:  # interrupted while waiting: withdraw the request, free a late grant
        with contextlib.suppress(Exception):
            ray.cancel(request)
            coordinator.release.remote(key, holder)
        raise
    if not granted:
        raise RuntimeError(f"stage {key}: the coordinator counts this process ({holder}) as dead")
    try:
        yield
    finally:
        ray.get(coordinator.release.remote(key, holder))


@contextlib.contextmanager
def _flock(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
