"""Known library noise kept out of a run's log, in the trial workers and in the driver.

A study's log is read by a person: per trial it should say which stage started and ended (the
chain's stage lines), not repeat a library's notice once per trial or draw a progress bar per
dataset map. Exactly these are silenced, each by its message or by the library's own switch:

- transformers' deprecation of the `past_key_values` keyword (a FutureWarning from every model
  forward that passes it, and the `past_key_values`/`cache_params` logger notice);
- the progress bars of `datasets` (TRL's "Building labels for train dataset", "Truncating train
  dataset", ...) and of transformers ("Loading weights"), and transformers' info/warning logs
  (`set_verbosity_error`: its errors still show).

Every other warning is left as it was: a UserWarning of the engine (e.g. DPO's reference
fallback, curvature's dropped examples) or of a library still reaches the log.
"""

from __future__ import annotations

import logging
import os
import warnings

# The messages silenced, as regular expressions matched at the start of the message.
PAST_KEY_VALUES_WARNING = r"`past_key_values` is deprecated"
PAST_KEY_VALUES_NOTICE = "`past_key_values`/`cache_params` are deprecated"


class _DropNotices(logging.Filter):
    """Drops the transformers logger's records that are known notices (PAST_KEY_VALUES_NOTICE),
    whatever verbosity another component sets later (a trainer sets its own log level)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return PAST_KEY_VALUES_NOTICE not in record.getMessage()


_NOTICE_FILTER = _DropNotices()


def quiet_libraries() -> None:
    """Silence the known noise in this process (idempotent; call before the libraries run)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=PAST_KEY_VALUES_WARNING, category=FutureWarning)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    # On the library's handlers: a record of a module's logger passes its parents' handlers, not
    # their filters.
    for handler in transformers.utils.logging.get_logger().handlers:
        if _NOTICE_FILTER not in handler.filters:
            handler.addFilter(_NOTICE_FILTER)
