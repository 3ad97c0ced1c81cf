"""Tasks and templates: the paper's datasets as rendered, scored Examples (pure data, no torch).

    from trainables.tasks import load_examples
    train = load_examples("toxigen_qa", "train", size=2241, data_seed=0)

Data comes from the Hugging Face Hub unless a data dir (spec field, or $STUDY_DATA_DIR)
points at a local mirror of the original release files.
"""

from .example import Example
from .loading import SPLITS, clear_caches, load_examples
from .registry import TASK_NAMES, TaskDefinition, UnknownTaskError, get_task
from .source import DATA_DIR_ENV, resolve_data_dir

__all__ = [
    "DATA_DIR_ENV",
    "SPLITS",
    "TASK_NAMES",
    "Example",
    "TaskDefinition",
    "UnknownTaskError",
    "clear_caches",
    "get_task",
    "load_examples",
    "resolve_data_dir",
]
