"""The one exception type the CLI turns into a clean one-line error."""

from __future__ import annotations

import difflib
import errno
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
    if isinstance(exc, MemoryError) or _out_of_memory(exc):
        return VaeError(
            "out of memory: lower --batch-size, --latent-dim or --hidden-dim (for `vae eval`: "
            "--chunk, -k or --batch-size)"
        )
    if isinstance(exc, OverflowError) or (
        isinstance(exc, RuntimeError | TypeError)
        and ("cannot be converted to type" in str(exc) or "Overflow when unpacking" in str(exc))
    ):
        return VaeError(f"a number is too large for torch ({one_line(str(exc), 120)}): use a smaller value")
    if isinstance(exc, OSError) and exc.errno is not None:
        where = exc.filename or "a file"
        hint = {
            errno.ENOSPC: "free some space",
            errno.EDQUOT: "free some space (disk quota exceeded)",
            errno.EROFS: "choose a writable location",
            errno.EACCES: "fix the permissions or choose another location",
            errno.EPERM: "fix the permissions or choose another location",
            errno.ENOENT: "check the path",
        }.get(exc.errno, "check the path, or choose a writable location")
        return VaeError(f"cannot read or write {where} ({exc.strerror}): {hint}")
    return None


def _out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA, MPS) and the CPU allocator's RuntimeError."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def unexpected(exc: BaseException) -> VaeError:
    """The last resort: an error nobody translated still ends in one line, not a traceback."""
    first = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else "", 200)
    return VaeError(
        f"unexpected {type(exc).__name__}{': ' + first if first else ''} "
        f"(rerun with `vae --debug ...` for the traceback, and please report it)"
    )


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


class Interrupted(BaseException):
    """SIGTERM/SIGINT outside training's own handler (GracefulStop): the command stops where
    it is. A BaseException, so that no `except Exception` swallows it, and not a
    KeyboardInterrupt, which Lightning turns into exit status 1."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)


def one_line(text: str, limit: int = 600) -> str:
    """Messages can quote user input (a YAML value, a path): keep them one short line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
