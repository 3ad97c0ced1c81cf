"""`study plan`: count a study (or several, or every paper preset) and print its cost plan.

One file: the whole plan (study.cost_report.render_plan). Several, or `--paper` (every
paper-* preset on the model it declares): one line each and a total. Rates come from the
throughput table (study/throughput.yaml or `--throughput FILE`) for `--gpu` (default A100-80GB,
`cpu` for the tiny model), or from a finished study's timings (`--throughput-from`). Nothing is
trained, no weights are loaded, nothing is written to storage. Exit 2 on a bad study or
throughput file.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
DEFAULT_GPU = "A100-80GB"


def plan_command(args: Any) -> int:
    from study.cost_report import render_plan, render_summary
    from study.presets import preset_paths, resolve_study_file
    from study.spec_loading import load_spec_file
    from study.throughput import DEFAULT_TABLE, ThroughputError, load_table

    try:
        table = load_table(args.throughput or DEFAULT_TABLE)
    except ThroughputError as exc:
        print(f"study: throughput table:\n{exc.render()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    files = list(args.files)
    if args.paper:
        files += [name for name in preset_paths() if name.startswith("paper-")]
    if not files:
        print("study plan: name a study file or preset (or --paper)", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = []
    for file in files:
        spec = load_spec_file(resolve_study_file(file), args.overrides)
        if args.storage:
            spec = dataclasses.replace(spec, storage=args.storage)
        if spec.search is not None:
            print(f"study plan: {file}: an Optuna search samples its points while it runs; "
                  "plan a grid of the points you expect instead", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            cost, params, rate, hours = plan_one(spec, table, gpu=args.gpu, measured_from=args.throughput_from,
                                                 fresh=args.fresh)
        except KeyError as exc:  # a GPU kind the table does not have
            print(f"study plan: {exc.args[0]}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if len(files) == 1:
            print(render_plan(cost, hours, rate, model=spec.model.name, params=params,
                              gpus_per_trial=spec.execution.gpus_per_trial))
            return 0
        rows.append((Path(file).stem, cost, hours, rate))
    print(render_summary(rows))
    return 0


def plan_one(spec: Any, table: Any, *, gpu: str | None, measured_from: str | None, fresh: bool) -> tuple:
    """(cost plan, model parameters, rate, hours) of one study."""
    from study.orchestrate import plan_costs
    from study.throughput import gpu_hours

    cost, params = plan_costs(spec, fresh=fresh, chars_per_token=table.chars_per_token,
                              model_params=table.model_params)
    rate = study_rate(spec, table, params, gpu=gpu, measured_from=measured_from)
    return cost, params, rate, gpu_hours(cost, rate)


def study_rate(spec: Any, table: Any, params: int | None, *, gpu: str | None, measured_from: str | None) -> Any:
    """The rate a study is costed at: measured in a finished study, else the table's for `gpu`."""
    from study.throughput import measured

    params = params or 1
    if measured_from:
        import yaml

        from contract.layout import StudyLayout

        finished = yaml.safe_load(StudyLayout(Path(measured_from)).study_file.read_text())
        execution = finished.get("execution") or {}
        rate = measured(measured_from, params=params, gpus_per_trial=float(execution.get("gpus_per_trial") or 0),
                        gpu=gpu or "measured")
        if finished.get("model", {}).get("name") != spec.model.name:
            print(f"[plan] note: {measured_from} ran {finished.get('model', {}).get('name')}, this study "
                  f"{spec.model.name}: its rates are used as they are", file=sys.stderr)
        return rate
    kind = gpu or ("cpu" if spec.model.name == "tiny" else DEFAULT_GPU)
    return table.rate(kind, params)
