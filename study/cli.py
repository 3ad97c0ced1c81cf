"""`study` command line: validate, plan, run, report, status, presets, tasks (also `python -m study ...`).

Exit codes: 0 success; 1 the study ran but some trials failed; 2 bad input (invalid study
file, bad --set, missing results folder, a bad row of task data), reported with file, line and
field path.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

STAGE_LINES = r"\[stage\] trial "
"""Ray folds log lines that differ only in their numbers ("[repeated 2x across cluster]"); each
stage's start and end line (trainables.timings.stage_line) differs from another trial's only in
numbers, so lines matching this are never folded. Ray reads the setting when it is imported."""
os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", STAGE_LINES)

from contract.atomic import WriteError
from contract.problems import TokenizationError
from study.orchestrate import StudyBusyError, study_needs, tokenization_preview
from study.presets import render_presets, resolve_study_file
from study.spec_loading import SpecError, load_spec_file
from tasks.bad_rows import BadRowsError  # pure data, no torch
from tasks.source import DataUnavailableError, data_source_line
from tasks.task_file_problems import TaskFileError

EXIT_BAD_INPUT = 2

SET_HELP = ("change a field of the study file without editing it: a dotted field path and a YAML value, "
            "e.g. --set model=tiny, --set stage_defaults.learning_rate=1e-4, --set seeds=[0,1,2], "
            "--set grid.stage1.learning_rate=[1e-3,2e-3]; repeat it for several, applied in order")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description="Chained fine-tuning studies on Ray (see README.md).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a study file; starts nothing")
    p.add_argument("file", help="study file (YAML) or preset name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--show-tokens", action="store_true",
                   help="also load the model's tokenizer and show what the model will see: one example of each task "
                        "rendered, each option's scored tokens, and tokenization warnings and errors")
    p.add_argument("--data", action="store_true",
                   help="also read every data file the study needs and report every bad row (FILE:LINE); "
                        "exit 2 on one unless data.bad_rows is skip")

    p = sub.add_parser("plan", help="what a study will train, score and write, and its estimated GPU-hours; "
                                    "trains nothing, loads no weights")
    p.add_argument("files", nargs="*", metavar="FILE", help="study files (YAML) or preset names; "
                   "several: one line each and a total")
    p.add_argument("--paper", action="store_true", help="every paper-* preset, one line each and a total")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--storage", help="results root whose stored stages are reused (overrides the file's storage)")
    p.add_argument("--fresh", action="store_true", help="plan a run without --resume: every stage trained again")
    p.add_argument("--gpu", help="GPU kind of the throughput table (default: A100-80GB; cpu for the tiny model)")
    p.add_argument("--throughput", metavar="FILE", help="throughput table (default: study/throughput.yaml)")
    p.add_argument("--throughput-from", metavar="RESULTS_FOLDER",
                   help="rates measured in a finished study's timings instead of the table's")

    p = sub.add_parser("run", help="run a study on the Ray cluster in RAY_ADDRESS, or a local one")
    p.add_argument("file", help="study file (YAML) or preset name")
    p.add_argument("--storage", help="results root (overrides the file's storage)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted or extended study: skip finished trials, reuse stored stages")
    p.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    p.add_argument("--verify-checkpoints", action="store_true",
                   help="before reusing a checkpoint stored by an earlier run, check its sha256 hashes against "
                        "its stage record (file sizes are always checked)")
    p.add_argument("--force", action="store_true",
                   help="start a study the hardware preflight refuses (a step over execution.gpu_memory_gb, "
                        "or a model over 1B parameters fine-tuned on CPU)")

    p = sub.add_parser("report", help="write report.md/.html, tables and figures from a results folder")
    p.add_argument("results_dir")
    p.add_argument("--out", help="output folder (default: RESULTS_DIR/report)")

    p = sub.add_parser("status", help="trials done/running/failed and stages trained vs shared, from a results folder")
    p.add_argument("results_dir")

    sub.add_parser("presets", help="list the shipped study files")

    p = sub.add_parser("tasks", help="list the tasks (built-in, plus YAML task files): kind, splits, groups, metrics, source")
    p.add_argument("task_files", nargs="*", metavar="TASK_FILE", help="YAML task files to include")
    return parser


def _show_tokens(spec) -> int:
    """`study validate --show-tokens`: the tokenization preflight, printed; exit 2 on its errors."""
    shown, error = tokenization_preview(spec)
    print(shown)
    if error is not None:
        print(f"study: tokenization: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _check_data(spec) -> None:
    """`study validate --data`: every split the study reads, read and checked row by row; a bad
    row raises BadRowsError (exit 2) unless data.bad_rows is skip, which lists what it leaves out."""
    from study.orchestrate import check_study_data, skipped_lines

    started = time.perf_counter()
    check = check_study_data(spec)
    where = check.data_dir or "the Hugging Face Hub"
    for line in skipped_lines(check.bad):
        print(line)
    n_tasks = len({task for task, _ in check.reads})
    print(f"data: {len(check.reads)} split{'s' if len(check.reads) != 1 else ''} of {n_tasks} "
          f"task{'s' if n_tasks != 1 else ''} read from {where} "
          f"in {time.perf_counter() - started:.1f} s: "
          f"{f'{len(check.bad)} bad rows skipped' if check.bad else 'no bad rows'}")


def _trials(n: int) -> str:
    """'1 trial', '4 trials'."""
    return f"{n} trial{'s' if n != 1 else ''}"


def _print_needs(needs) -> None:
    """The needs block (study.needs), and what `study run` would refuse on CPU."""
    from study.needs import cpu_problem, render_needs

    for line in render_needs(needs):
        print(line)
    cpu = cpu_problem(needs)
    if cpu is not None:
        print(f"needs: `study run` refuses this: {cpu.path}: {cpu.message}")


def _load(file: str, overrides: list[str]):
    return load_spec_file(resolve_study_file(file), overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            spec = _load(args.file, args.overrides)
            # the memory check (GPU studies; exit 2 when a step does not fit) and what the study needs
            _, lines, needs, memory_error = study_needs(spec, local_files_only=True)
            for line in lines:
                print(line)
            _print_needs(needs)
            if memory_error is not None:
                raise memory_error
            n = len(spec.chains) * len(spec.seeds)
            if spec.search is not None:
                n *= spec.search.num_samples
                print(f"{resolve_study_file(args.file)}: valid study '{spec.name}' "
                      f"(Optuna search: up to {_trials(n)})")
                print(data_source_line(spec.data_dir))
                if args.data:
                    _check_data(spec)
                return 0
            for values in spec.grid.values():
                n *= len(values)
            print(f"{resolve_study_file(args.file)}: valid study '{spec.name}' ({_trials(n)})")
            print(data_source_line(spec.data_dir))
            if args.data:
                _check_data(spec)
            if args.show_tokens:
                return _show_tokens(spec)
            return 0
        if args.command == "plan":
            from study.plan_command import plan_command

            return plan_command(args)
        if args.command == "run":
            spec = _load(args.file, args.overrides)
            if args.storage:
                # Set directly, not through --set: a path is not YAML ('#' would start a comment).
                spec = dataclasses.replace(spec, storage=args.storage)
            from study.orchestrate import run_study

            outcome = run_study(spec, resume=args.resume, report=not args.no_report,
                                verify_checkpoints=args.verify_checkpoints, force=args.force)
            print(f"[study] results: {outcome.study_dir}")
            if outcome.report:
                print(f"[study] report: {outcome.report}")
            if outcome.failed:
                print(f"[study] {len(outcome.failed)} of {_trials(outcome.trials)} failed:", file=sys.stderr)
                for line in outcome.failed:
                    print(f"  {line}", file=sys.stderr)
                return 1
            return 0
        if args.command == "report":
            from analysis.report import ReportFolderError, write_report

            try:
                path = write_report(Path(args.results_dir), Path(args.out) if args.out else None)
            except ReportFolderError as exc:
                print(f"study: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
            print(f"[study] report: {path}")
            return 0
        if args.command == "status":
            from analysis.status import render_status, study_status

            print(render_status(study_status(Path(args.results_dir))))
            return 0
        if args.command == "presets":
            print(render_presets(shutil.get_terminal_size().columns if sys.stdout.isatty() else None))
            return 0
        if args.command == "tasks":
            from study.task_listing import render_tasks

            print(render_tasks(args.task_files))
            return 0
    except StudyBusyError as exc:
        print(f"study: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except DataUnavailableError as exc:
        print(f"study: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, TaskFileError) as exc:
        print(f"study: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BadRowsError as exc:
        print(f"study: {exc.render()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WriteError as exc:  # disk full, permission denied: nothing partial was left behind
        print(f"study: {exc}", file=sys.stderr)
        return 1
    except TokenizationError as exc:
        print(f"study: tokenization: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
