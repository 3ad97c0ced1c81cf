"""`study tasks`: the task registry as a table a researcher can read before writing a study."""

from __future__ import annotations

from collections.abc import Sequence


def render_tasks(task_files: Sequence[str] = ()) -> str:
    """One block per task: kind, splits, groups and groupings, metrics (with direction), version,
    where its data comes from (the Hub, and the path under a local mirror; with a mirror
    configured, whether each file is there and its row count), where its validation split comes
    from and which option counts it keeps by default. The first line names the data source."""
    from tasks import get_task, task_names
    from tasks.source import data_source_line, resolve_data_dir
    from tasks.task_file_registration import register_task_file

    for path in task_files:
        register_task_file(path)
    try:
        data_dir, header = resolve_data_dir(None), data_source_line(None)
    except OSError as exc:  # STUDY_DATA_DIR names no folder: say so, list the tasks anyway
        data_dir, header = None, f"data: {exc}"
    blocks = [header]
    for name in task_names():
        task = get_task(name)
        groups = task.group_field or "none"
        if task.groupings:
            groups += f"; also by {', '.join(task.groupings)}"
        metrics = ", ".join(f"{m.name} ({m.direction})" for m in task.metrics)
        mirror = "; ".join(f"{split}: {path}{_presence(task.mirror, data_dir, split)}"
                           for split, path in task.mirror.files.items() if split in task.splits)
        counts = "all" if task.option_counts is None else ", ".join(map(str, task.option_counts))
        lines = [
            f"{name}  [{task.kind}; splits: {', '.join(task.splits)}; version {task.version}; {task.origin}]",
            f"  {task.description}",
            f"  groups: {groups}",
            f"  metrics: {metrics}",
            f"  source: {task.remote_source}",
            f"  mirror: {mirror}",
        ]
        if task.has_validation:
            lines.append(f"  validation: {task.validation}")
        if task.kind == "choice":
            lines.append(f"  option counts kept by default: {counts} (tasks.{name}.option_counts)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _presence(mirror, data_dir, split: str) -> str:
    """' (2251 rows)', ' (57 files, 14042 rows)' or ' (missing)' under a configured mirror; '' without one."""
    if data_dir is None:
        return ""
    found = mirror.presence(data_dir, split)
    if found is None:
        return " (missing)"
    files, rows = found
    return f" ({f'{files} files, ' if files != 1 else ''}{rows} row{'s' if rows != 1 else ''})"
