"""What the Tuner needs to run a study: Tune's grid, or an Optuna search over the stage axes.

    grid study   ─► param_space {chain, seed, stage<k>.<field>…} as tune.grid_search, no search_alg
    search study ─► ChainOptunaSearch: one OptunaSearch (seeded TPESampler) per chain; each point
                    it samples runs once per seed, and Optuna is told the seed mean

Why not chain and seed as `tune.grid_search` beside OptunaSearch: Ray 2.60 refuses it
(`OptunaSearch.convert_search_space` raises "Grid search parameters cannot be automatically
converted", and a searcher built with its own space must get a param_space without unresolved
values). Nor chain and seed as Optuna categoricals: the sampler would then "optimise" the seed
and pool chains whose objectives mean different things (forgetting of A after A→B vs B→A). So
every chain gets its own Optuna study, and seeds are replicates of a sampled point, as in the
paper's seed means. Samplers of all chains share `search.seed`, so their first (random, TPE
startup) points are the same across chains: paired comparisons of chain orders.

The sampler's options are spelled out (`tpe_sampler`), not left to Optuna's defaults, which
changed in Optuna 5 (multivariate TPE and the constant liar became the defaults for one
objective): a seeded search proposes the same points under every Optuna version the project
admits (pyproject.toml: optuna 5.x, whose Parzen-estimator bandwidth is no option).

A search study's plans are built per sampled config by `study.planner.SampledPlans`; after
`tuner.fit()` the driver collects the plans that ran with `study.planner.collect_plans`.
"""

from __future__ import annotations

import math
import pickle
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ray.tune.search import Searcher

from study.points import sampled_value
from study.spec import StudySpec


@dataclass(frozen=True)
class SearchSetup:
    """Tuner arguments of a study: `tune.Tuner(trainable, param_space=s.param_space,
    tune_config=tune.TuneConfig(**s.tune_config_kwargs(), ...))`."""

    param_space: dict[str, Any]
    search_alg: Any | None
    """None for grids; a ChainOptunaSearch (a ray.tune.search.Searcher) for `search:` studies."""
    num_samples: int
    """Tune's num_samples: 1 for grids (the grid is the product); for a search, the most trials
    it may start, num_samples × chains × seeds (fewer when Optuna proposes a point again)."""
    metric: str | None = None
    """Single-objective searches only (TuneConfig.metric, for ResultGrid.get_best_result);
    None for grids and multi-objective searches, whose metrics live in the searcher."""
    mode: str | None = None
    objectives: tuple[tuple[str, str], ...] = field(default=())

    def tune_config_kwargs(self) -> dict[str, Any]:
        return {"search_alg": self.search_alg, "num_samples": self.num_samples, "metric": self.metric, "mode": self.mode}


def search_setup(spec: StudySpec) -> SearchSetup:
    from ray import tune

    space: dict[str, Any] = {"chain": tune.grid_search(list(spec.chains)), "seed": tune.grid_search(list(spec.seeds))}
    search = spec.search
    if search is None:
        for axis in sorted(spec.grid):
            space[axis] = tune.grid_search(list(spec.grid[axis]))
        return SearchSetup(param_space=space, search_alg=None, num_samples=1)
    # chain and seed stay in param_space for Tune's tables and readers of the experiment state;
    # every trial's config comes whole from the searcher, which replaces them.
    domains = {axis: tune_domain(dist) for axis, dist in sorted(search.space.items())}
    objectives = tuple((o.metric, o.mode) for o in search.objectives)
    searcher = ChainOptunaSearch(
        chains=list(spec.chains), seeds=list(spec.seeds), space=domains,
        distributions={k: {kind: list(v) for kind, v in d.items()} for k, d in search.space.items()},
        metric=[m for m, _ in objectives], mode=[m for _, m in objectives],
        num_samples=search.num_samples, seed=search.seed,
    )
    single = len(objectives) == 1
    return SearchSetup(
        param_space={**space, **domains}, search_alg=searcher,
        num_samples=search.num_samples * len(spec.chains) * len(spec.seeds),
        metric=objectives[0][0] if single else None, mode=objectives[0][1] if single else None,
        objectives=objectives,
    )


TPE_OPTIONS: dict[str, Any] = {"n_startup_trials": 10, "n_ei_candidates": 24, "constant_liar": True, "group": False}
"""The TPESampler options every search uses besides its seed and `multivariate` (True for one
objective, False for several): Optuna 5's defaults, written out so a new default cannot change
a seeded search (Optuna 4's were multivariate=False, constant_liar=False). The options Optuna
deprecates (gamma, weights, prior_weight, consider_*) keep their defaults, unchanged from 4 to 5."""


def tpe_sampler(seed: int, objectives: int):
    """The seeded TPESampler of one chain's study (TPE_OPTIONS; multi-objective TPE for several)."""
    import optuna

    return optuna.samplers.TPESampler(seed=int(seed), multivariate=objectives == 1, **TPE_OPTIONS)


def tune_domain(dist: Mapping[str, Sequence[Any]]):
    """A validated search.space distribution as a Tune domain (OptunaSearch converts these)."""
    from ray import tune

    [(kind, values)] = dist.items()
    if kind == "loguniform":
        return tune.loguniform(values[0], values[1])
    if kind == "uniform":
        return tune.uniform(values[0], values[1])
    if kind == "int":  # both ends included; Tune's randint excludes its upper bound
        return tune.randint(values[0], values[1] + 1)
    return tune.choice(list(values))


@dataclass
class _Point:
    config: dict[str, Any]
    """chain and axes (no seed)."""
    optuna_ids: list[str]
    """Optuna trials that proposed this point (the first, then repeats told the same result)."""
    pending: set[int]
    values: dict[int, list[float]] = field(default_factory=dict)
    """seed -> objective values of its finished trial (finite values only)."""

    @property
    def done(self) -> bool:
        return not self.pending


class ChainOptunaSearch(Searcher):
    """A Tune Searcher: one `OptunaSearch` per chain, each point run for every seed.

    - Chains take turns: round r asks every chain's study for its r-th point; the point's
      trials (one per seed) are handed out before the next point is asked for.
    - Values are rounded as trials run them (continuous axes to SAMPLE_DIGITS significant
      digits), so a point has one trial id per seed.
    - A point Optuna proposes again is not run again: that Optuna trial gets the first one's
      result (at once, or when it arrives). It still counts towards num_samples.
    - When every seed of a point has finished, its study is told the seed mean of each
      objective over the seeds that reported finite values (none: the Optuna trial failed).
      Intermediate reports are ignored (no pruning; forgetting metrics are NaN until the end).
    """

    def __init__(self, *, chains: Sequence[str], seeds: Sequence[int], space: Mapping[str, Any],
                 distributions: Mapping[str, Mapping[str, Sequence[Any]]], metric: Sequence[str],
                 mode: Sequence[str], num_samples: int, seed: int):
        from ray.tune.search.optuna import OptunaSearch

        single = len(metric) == 1
        super().__init__(metric=metric[0] if single else list(metric), mode=mode[0] if single else list(mode))
        self._metrics, self._modes = list(metric), list(mode)
        self._chains, self._seeds = list(chains), list(seeds)
        self._distributions = {k: dict(v) for k, v in distributions.items()}
        self._num_samples = int(num_samples)
        optuna_space = OptunaSearch.convert_search_space(dict(space))
        # Passing the sampler (not OptunaSearch's `seed`, which it ignores beside a sampler and
        # which is falsy for 0) keeps the seeding explicit; TPESampler handles one or several
        # objectives (multi-objective TPE). Its options are explicit (TPE_OPTIONS).
        self._inner = {
            chain: OptunaSearch(space=optuna_space, metric=self.metric, mode=self.mode, study_name=f"{chain}",
                                sampler=tpe_sampler(seed, len(self._metrics)))
            for chain in self._chains
        }
        self._asked = {chain: 0 for chain in self._chains}
        self._points: dict[str, dict[tuple, _Point]] = {chain: {} for chain in self._chains}
        self._queue: deque[tuple[str, tuple, int]] = deque()
        self._trials: dict[str, tuple[str, tuple, int]] = {}
        self._told: set[str] = set()
        self._turn = 0

    # ------------------------------------------------------------ Tune's Searcher interface

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # fully configured by search_setup; param_space only documents the axes

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self._queue and not self._ask_next_point():
            return Searcher.FINISHED
        chain, key, seed = self._queue.popleft()
        self._trials[trial_id] = (chain, key, seed)
        return {**self._points[chain][key].config, "seed": seed}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        entry = self._trials.pop(trial_id, None)
        if entry is None:
            return
        chain, key, seed = entry
        point = self._points[chain][key]
        point.pending.discard(seed)
        if result and not error:
            values = [result.get(m) for m in self._metrics]
            if all(_finite(v) for v in values):
                point.values[seed] = [float(v) for v in values]
        if point.done:
            for optuna_id in point.optuna_ids:
                self._tell(chain, optuna_id, point)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__.copy(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))

    # ------------------------------------------------------------ results

    def results(self, chain: str) -> list[tuple[dict[str, Any], list[float]]]:
        """(point config, seed-mean objective values) of the chain's finished points with values."""
        return [(dict(p.config), _means(p)) for p in self._points[chain].values() if p.done and p.values]

    def best(self, chain: str) -> list[tuple[dict[str, Any], list[float]]]:
        """The chain's Pareto front (single objective: its best points) among `results(chain)`."""
        return pareto_front(self.results(chain), self._modes)

    def optuna_study(self, chain: str):
        """The chain's optuna.Study (OptunaSearch keeps it in `_ot_study`; Ray 2.50-2.60)."""
        return self._inner[chain]._ot_study

    # ------------------------------------------------------------ internals

    def _ask_next_point(self) -> bool:
        """Queue the trials of the next new point, chains taking turns; False when every
        chain has used its num_samples Optuna trials."""
        for _ in range(len(self._chains)):
            chain = self._chains[self._turn % len(self._chains)]
            self._turn += 1
            while self._asked[chain] < self._num_samples:
                optuna_id = f"{chain}#{self._asked[chain]}"
                self._asked[chain] += 1
                params = self._inner[chain].suggest(optuna_id)
                config = {"chain": chain, **{axis: sampled_value(axis, self._distributions[axis], params[axis])
                                             for axis in sorted(self._distributions)}}
                key = tuple(sorted((k, repr(v)) for k, v in config.items()))
                point = self._points[chain].get(key)
                if point is None:
                    self._points[chain][key] = _Point(config, [optuna_id], set(self._seeds))
                    self._queue.extend((chain, key, seed) for seed in self._seeds)
                    return True
                point.optuna_ids.append(optuna_id)  # proposed again: reuse, do not rerun
                if point.done:
                    self._tell(chain, optuna_id, point)
        return False

    def _tell(self, chain: str, optuna_id: str, point: _Point) -> None:
        if optuna_id in self._told:
            return
        self._told.add(optuna_id)
        inner = self._inner[chain]
        if point.values:
            inner.on_trial_complete(optuna_id, result=dict(zip(self._metrics, _means(point))))
        else:
            inner.on_trial_complete(optuna_id, result=None, error=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _means(point: _Point) -> list[float]:
    rows = list(point.values.values())
    return [sum(column) / len(rows) for column in zip(*rows)]


def pareto_front(rows: Sequence[tuple[Any, Sequence[float]]], modes: Sequence[str]) -> list[tuple[Any, list[float]]]:
    """Rows (item, values) that no other row dominates (at least as good in every objective,
    better in one), in input order; `modes` are 'max'/'min' per value."""
    signs = [1.0 if m == "max" else -1.0 for m in modes]
    scored = [[s * v for s, v in zip(signs, values)] for _, values in rows]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [(item, list(values)) for (item, values), score in zip(rows, scored)
            if not any(dominates(other, score) for other in scored)]
