"""The ground floor: the facts every package of the engine shares, each stated once.

- plan.py: the typed plan of a trial and its stages (what `study` builds and `trainables` runs).
- schema.py: the results tables, their columns and types, as data (the writer and the readers),
  and the values readers rely on (the ALL group, the primary grouping, the headline metrics).
- methods.py: the stage methods, eval modes, DPO references and RL prompt modes, and what each
  method needs of TRL (the study checks them, trainables runs them, analysis reads them back).
- layout.py: where everything lives in a study folder.
- records.py: the JSON records in it (trial end marker, stage record, run record), their statuses.
- content_hash.py: the one content hash behind stage keys, trial ids and measurement keys.
- keys.py: the recipes of trial ids, base-stage, measurement and validation keys.
- atomic.py: writing a file or a folder so that no reader ever sees half of it.
- problems.py: the one problem type of YAML files (path, line, message, "did you mean"), and
  TokenizationError, the user's-setup problem of a model that cannot score a task as trained.
- workers.py: how a stage's global batch splits over a trial's data-parallel workers.

Nothing here imports `study`, `tasks`, `trainables` or `analysis`, nor torch, ray or
transformers: every layer may import it, and it imports no layer.
"""
