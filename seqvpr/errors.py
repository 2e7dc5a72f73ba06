"""One error type for bad input, so every stage reports the offending file and the problem."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Raised when an input file is malformed: the message always starts with the file's path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def unknown_name(kind: str, name: str, known) -> str:
    """``unknown <kind> 'x' (did you mean 'y'?); expected one of a, b, c``: the message of a name
    (run, season, camera, ...) that is not among ``known``."""
    import difflib

    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; expected one of {', '.join(known)}"
