"""The one exception type the CLI turns into a clean one-line error."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VaeError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""


def unknown(kind: str, word: str, choices: Iterable[str]) -> VaeError:
    choices = sorted(choices)
    return VaeError(
        f'unknown {kind} "{word}"{did_you_mean(word, choices)}; choose one of: {", ".join(choices)}'
    )


def translate(exc: BaseException) -> VaeError | None:
    """Known third-party exceptions -> a VaeError that says what to do; None: a real bug.

    The one place where Lightning's and the OS's errors are turned into user-facing ones,
    so that no command needs its own except-clauses.
    """
    if isinstance(exc, VaeError):
        return exc
    name = type(exc).__name__
    if name == "MisconfigurationException" or (isinstance(exc, ValueError) and _raised_in_lightning(exc)):
        return lightning_rejected(exc)
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError | FileExistsError):
        where = exc.filename or "a file"
        return VaeError(f"cannot write {where} ({exc.strerror}): choose a writable location")
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc):
        return VaeError("out of device memory: lower --batch-size (or --chunk for `vae eval`)")
    return None


def lightning_rejected(exc: BaseException, settings: str = "") -> VaeError:
    """Lightning's own objection to the Trainer settings, on one line."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    given = f" ({settings})" if settings else ""
    return VaeError(
        f"Lightning rejected the trainer settings{given}: {first} "
        f"(check --accelerator, --devices, --strategy, --num-nodes and --precision)"
    )


def _raised_in_lightning(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    path = last.tb_frame.f_code.co_filename if last is not None else ""
    return "pytorch_lightning" in path or "lightning_fabric" in path or "/lightning/" in path
