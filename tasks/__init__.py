"""Tasks and templates: the paper's datasets as rendered, scored Examples (pure data, no torch).

    from tasks import load_examples
    train = load_examples("toxigen_qa", "train", size=2241, data_seed=0)

Data comes from the Hugging Face Hub unless a data dir (spec field, or $STUDY_DATA_DIR)
points at a local mirror of the original release files. This package imports nothing of
`trainables`, `study` or `analysis` (only `contract`): every layer can read tasks.

What a task is, and how its data is found:
- definition.py: TaskDefinition (a task as a declarative entry), Metric, the splits and kinds.
- example.py: Example (a scored multiple-choice item) and GenerationPrompt (a prompt to continue).
- source.py: where rows come from: HubSource, MirrorSource, the data dir, cached file parsing.
- templates.py: the paper's prompt templates (Appendix A.2) and option letters.
- holdout.py: splits cut by a hash of content, never by seed or row order.
- sampling.py: stratified samples and keyed draws (the training subsets a study asks for).

The built-in tasks, one module per dataset:
- arc.py: ARC-Easy (trained and evaluated) and ARC-Challenge (evaluated).
- toxigen.py: ToxiGenQA, the paper's first safety task.
- bbq.py: BBQ, its rows, groups and content split; bbq_training.py: its training set (human-
  validated items first); bbq_bias.py: its bias scores.
- mmlu.py: MMLU, the held-out capability task.
- safety_prompts.py: the generation tasks judged for Safe % (ToxiGen prompts, SaferDialogues).

A researcher's own multiple-choice task, declared in YAML (the schema is task_file.py's docstring):
- task_file_problems.py: TaskFileError, the YAML read with the line of every key, the Checker.
- task_file.py: the schema, and read_task_file: the whole file checked into a TaskFile.
- task_file_rows.py: mirror files read into rows, rows turned into Examples (RowParser).
- task_file_registration.py: load_task_file / register_task_file: a TaskFile as a registered task.

The table and the loading:
- registry.py: every task by name (built-ins and registered files); get_task, register.
- loading.py: load_examples: one split of a task, filtered and sampled, cached per process.
- reward_sources.py: what a task gives an online-RL stage to learn its reward from.
"""

from .definition import SPLITS, Metric, TaskDefinition
from .example import Example, GenerationPrompt
from .loading import clear_caches, load_examples, resolve_option_counts
from .registry import TASK_NAMES, UnknownTaskError, get_task, register, task_names
from .source import DATA_DIR_ENV, resolve_data_dir
from .task_file_problems import TaskFileError
from .task_file_registration import load_task_file, register_task_file

__all__ = [
    "DATA_DIR_ENV",
    "SPLITS",
    "TASK_NAMES",
    "Example",
    "GenerationPrompt",
    "Metric",
    "TaskDefinition",
    "TaskFileError",
    "UnknownTaskError",
    "clear_caches",
    "get_task",
    "load_examples",
    "load_task_file",
    "register",
    "register_task_file",
    "resolve_data_dir",
    "resolve_option_counts",
    "task_names",
]
