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
