"""Tasks and templates: the paper's datasets as rendered, scored Examples (pure data, no torch).

    from tasks import load_examples
    train = load_examples("toxigen_qa", "train", size=2241, data_seed=0)

Data comes from the Hugging Face Hub unless a data dir (spec field, or $STUDY_DATA_DIR)
points at a local mirror of the original release files.
"""

from .declarative import TaskFileError, load_task_file, register_task_file
from .definition import SPLITS, Metric, TaskDefinition
from .example import Example, GenerationPrompt
from .loading import clear_caches, load_examples, resolve_option_counts
from .registry import TASK_NAMES, UnknownTaskError, get_task, register, task_names
from .source import DATA_DIR_ENV, resolve_data_dir

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
