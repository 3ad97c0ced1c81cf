"""`study plan` as text: a study's cost plan (study.cost_plan) with its GPU-hours (study.throughput),
and the one-line-per-study summary of several (the whole paper: `study plan --paper`)."""

from __future__ import annotations

from study.cost_plan import POLICIES, CostPlan
from study.throughput import Hours, Rate


def size(n: float) -> str:
    """Decimal bytes, as the memory model prints them (1 GB = 1e9 B)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def count(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n:,.0f}"


def render_plan(cost: CostPlan, hours: Hours, rate: Rate, *, model: str, params: int | None,
                gpus_per_trial: float) -> str:
    """The whole plan: trials, stages after sharing, per-stage and total work, checkpoints, hours."""
    trials = f"{cost.trials} trial{'s' if cost.trials != 1 else ''}"
    lines = [f"study '{cost.study}': {trials}, model {model}"
             f" ({count(params)} parameters)" if params else f"study '{cost.study}': {trials}, model {model}",
             f"stages: {cost.distinct_stages} distinct of {cost.stage_trainings_naive} in the chains; "
             f"{len(cost.trainings)} stage trainings, {len(cost.reused)} stored stages reused"]
    lines += [f"note: {n}" for n in cost.notes]
    header = (f"{'stage':52s} {'action':8s} {'train ex':>8s} {'fed':>8s} {'train tokens':>13s} "
              f"{'eval ex':>8s} {'scored tokens':>14s} {'valid ex':>8s} {'HVP ex':>8s}")
    lines += ["", header]
    for s in cost.stages:
        tokens = count(s.train_tokens) + ("" if s.train_tokens_exact or s.train_tokens is None else "~")
        lines.append(f"{s.label[:52]:52s} {s.action:8s} {count(s.train_examples):>8s} {count(s.examples_fed):>8s} "
                     f"{tokens:>13s} {count(s.eval_examples):>8s} {count(s.scored_tokens):>14s} "
                     f"{count(s.validation_examples):>8s} {count(s.hvp_examples):>8s}")
    lines.append(f"{'total':52s} {'':8s} {count(cost.total('train_examples')):>8s} "
                 f"{count(cost.total('examples_fed')):>8s} {count(cost.total('train_tokens')):>13s} "
                 f"{count(cost.total('eval_examples')):>8s} {count(cost.total('scored_tokens')):>14s} "
                 f"{count(cost.total('validation_examples')):>8s} {count(cost.total('hvp_examples')):>8s}")
    lines.append("")
    lines.append("training tokens: " + ("exact (whole epochs of each training subsample)" if cost.train_tokens_exact
                                        else "~ marks an expected value (an unfinished epoch feeds a random part)"))
    tokens_note = ("estimated from characters per token (the model's tokenizer is not on this machine)"
                   if cost.tokens_estimated else "counted with the model's tokenizer")
    if cost.generation_upper_bound:
        tokens_note += "; generation counted as prompt + max_new_tokens (an upper bound)"
    lines.append(f"tokens: {tokens_note}")
    lines.append(f"checkpoints: {len(cost.trainings)} written x {size(cost.checkpoint_bytes)} = "
                 f"{size(cost.bytes_written)}; kept at the end of the run:")
    for policy in POLICIES:
        mark = "  <- this study" if policy == cost.policy else ""
        lines.append(f"  keep_checkpoints: {policy:6s} {cost.kept[policy]:4d} x {size(cost.checkpoint_bytes)} = "
                     f"{size(cost.bytes_kept(policy))}{mark}")
    unit = "CPU-hours (per trial process)" if rate.gpu == "cpu" else f"GPU-hours ({rate.gpu})"
    lines.append(f"estimated {unit}: {hours.total:.3g} = training {hours.train:.3g} + scoring {hours.score:.3g}"
                 f" + curvature {hours.curvature:.3g}")
    lines.append(f"  at {rate.train_tokens_per_s:,.0f} training / {rate.score_tokens_per_s:,.0f} scoring tokens/s "
                 f"per {'process' if rate.gpu == 'cpu' else 'GPU'}; source: {rate.source}")
    if gpus_per_trial > 1:
        lines.append(f"  a trial's {gpus_per_trial:g} GPUs share its work: wall-clock = GPU-hours / {gpus_per_trial:g}")
    return "\n".join(lines)


def render_summary(rows: list[tuple[str, CostPlan, Hours, Rate]]) -> str:
    """One line per study and a total: stage trainings, tokens, checkpoint bytes, GPU-hours."""
    header = (f"{'study':26s} {'trials':>6s} {'stages':>6s} {'train tokens':>13s} {'scored tokens':>14s} "
              f"{'written':>9s} {'kept needed/final/all':>26s} {'GPU-hours':>10s}")
    lines = [header]
    for name, cost, hours, rate in rows:
        kept = "/".join(size(cost.bytes_kept(p)) for p in POLICIES)
        lines.append(f"{name:26s} {cost.trials:6d} {len(cost.trainings):6d} {count(cost.total('train_tokens')):>13s} "
                     f"{count(cost.total('scored_tokens') + cost.total('validation_tokens')):>14s} "
                     f"{size(cost.bytes_written):>9s} {kept:>26s} {hours.total:10.1f}")
    total = sum(h.total for _, _, h, _ in rows)
    written = sum(c.bytes_written for _, c, _, _ in rows)
    lines.append(f"{'total':26s} {sum(c.trials for _, c, _, _ in rows):6d} "
                 f"{sum(len(c.trainings) for _, c, _, _ in rows):6d} "
                 f"{count(sum(c.total('train_tokens') for _, c, _, _ in rows)):>13s} "
                 f"{count(sum(c.total('scored_tokens') + c.total('validation_tokens') for _, c, _, _ in rows)):>14s} "
                 f"{size(written):>9s} {'':>26s} {total:10.1f}")
    if rows:
        rate = rows[0][3]
        lines.append(f"GPU kind {rate.gpu}: {rate.train_tokens_per_s:,.0f} training / {rate.score_tokens_per_s:,.0f} "
                     f"scoring tokens/s per GPU ({rate.source})")
        if any(c.tokens_estimated for _, c, _, _ in rows):
            lines.append("tokens estimated from characters per token (the model's tokenizer is not on this machine)")
    return "\n".join(lines)

