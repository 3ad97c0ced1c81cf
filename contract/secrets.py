"""Secrets from the environment never reach what the engine writes.

A Hugging Face token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN) or a Ray auth token (RAY_AUTH_TOKEN) lives
in the environment of the driver and the workers. The engine never reads them itself (the
libraries do), and nothing it writes is built from the environment: plans and study.yaml from the
study file, tables from the data and the models. The one way in is free text from an exception —
a library's message that quotes a URL, a header or a setting — which Tune stores with the trial
(its error files under the study's `_tune` folder), Ray Train with its run, and the run ledger
(`runs/<id>.json`) lists. So every trial runs inside `secrets_redacted()`: an exception whose text
holds a secret's value leaves the trial as a `RedactedError` with the value replaced, and the run
ledger's failures pass through `redact` too.

What counts as a secret: the variables in SECRET_ENV_VARS and any variable whose name says token,
secret, password or key (e.g. WANDB_API_KEY, AWS_SECRET_ACCESS_KEY), when its value has at least
MIN_SECRET_LENGTH characters (so a flag such as FOO_KEY=1 does not blank every "1").
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import traceback
from typing import Any, Callable, Iterator, Mapping, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RAY_AUTH_TOKEN")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY", re.IGNORECASE)
MIN_SECRET_LENGTH = 8


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{variable name: value} of the secrets in `environ` (default: this process's environment)."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items()
            if (name in SECRET_ENV_VARS or SECRET_NAME.search(name)) and len(value) >= MIN_SECRET_LENGTH}


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every secret's value replaced by `<$NAME>` (longest values first, so a secret
    that contains another is replaced whole)."""
    secrets = secret_values(environ)
    for name, value in sorted(secrets.items(), key=lambda item: -len(item[1])):
        text = text.replace(value, f"<${name}>")
    return text


class RedactedError(RuntimeError):
    """An exception whose text held a secret: its type, message and traceback, as text, redacted."""


@contextlib.contextmanager
def secrets_redacted() -> Iterator[None]:
    """Re-raise an exception whose text (message or traceback) holds a secret as a RedactedError
    without it; any other exception passes through unchanged."""
    try:
        yield
    except Exception as exc:
        text = "".join(traceback.format_exception(exc))
        clean = redact(text)
        if clean == text:
            raise
        raise RedactedError(clean) from None


def redacting(function: F) -> F:
    """`function` run inside `secrets_redacted()` (for the entry points of trials and workers)."""
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        with secrets_redacted():
            return function(*args, **kwargs)

    return run  # type: ignore[return-value]
