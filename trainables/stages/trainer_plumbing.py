"""What every stage runner does to a TRL trainer besides configuring it.

- `TrainLogRecorder`: the trainer's per-step logs as rows of the `train_log` table, stopping the
  training at the first non-finite loss (the chain records the stage as diverged);
- `quiet_trainer`: no per-step printing (metrics go to Parquet and Ray, not stdout);
- `frozen_copy`: a frozen reference policy, a copy of the model as the stage starts;
- `sharded_like_policy`: a frozen model placed as the trainer's own references are (FSDP-sharded
  over the ranks when the trainer shards: resident at its share, gathered whole for a forward).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any


def quiet_trainer(trainer: Any) -> None:
    """Metrics go to Parquet and Ray, not stdout: drop the per-step printer that disable_tqdm adds."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def frozen_copy(model: Any) -> Any:
    """A copy of `model` in eval mode with no gradients (a reference policy)."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


class TrainLogRecorder:
    """Collects the trainer's per-step logs as rows of the `train_log` table.

    `loss_key` names the logged value that marks a training step (online-RL trainers log no
    "loss"); `loss_fn` computes the row's loss from the logs when it is not that value itself.
    """

    def __init__(self, loss_key: str = "loss", lr_key: str = "learning_rate", loss_fn=None) -> None:
        self.rows: list[dict] = []
        self.loss_key = loss_key
        self.lr_key = lr_key
        self.loss_fn = loss_fn or (lambda logs: logs[loss_key])
        self._start = time.perf_counter()

    def callback(self):
        from transformers import TrainerCallback

        recorder = self

        class _Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and recorder.loss_key in logs:
                    loss = float(recorder.loss_fn(logs))
                    if not math.isfinite(loss):
                        # Diverged: stop here (chain.divergence records why) instead of
                        # spending the remaining steps on NaNs.
                        control.should_training_stop = True
                    recorder.rows.append({
                        "step": int(state.global_step),
                        "loss": loss,
                        "learning_rate": float(logs.get(recorder.lr_key, float("nan"))),
                        "grad_norm": float(logs.get("grad_norm", float("nan"))),
                        "seconds": time.perf_counter() - recorder._start,
                    })

        return _Callback()


def sharded_like_policy(model: Any, trainer: Any) -> Any:
    """`model` (frozen) as `trainer` would place a reference it built itself: with FSDP, sharded
    over the ranks by TRL's `prepare_fsdp` (what DPOTrainer and RLOOTrainer do; it shards the root
    module only, so each forward gathers the whole model, in the compute dtype); otherwise
    accelerate's evaluation-mode preparation (on the trainer's device, under its mixed-precision
    autocast). A sharded model's forward is a collective: every rank must run it equally often,
    as the rollouts of equal per-rank batches do."""
    if getattr(trainer, "is_fsdp_enabled", False):
        from trl.models import prepare_fsdp

        return prepare_fsdp(model, trainer.accelerator)
    return trainer.accelerator.prepare_model(model, evaluation_mode=True)
