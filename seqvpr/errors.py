"""One error type for bad input, so every stage reports the offending file and the problem."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Raised when an input file is malformed: the message always starts with the file's path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
