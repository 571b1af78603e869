"""Errors raised by the format readers.

`FormatError` names the file and the byte position of malformed input; `ImageError` carries the reason
an image could not be decoded (it becomes a failure record, never a crash).
"""

from __future__ import annotations


class FormatError(ValueError):
    """Malformed or unexpected content in a dataset file.

    `path` is the file (as given, possibly an fsspec URL), `position` the byte offset where the problem
    was found (None when it cannot be known), `message` what is wrong.
    """

    def __init__(self, path: str, position: int | None, message: str):
        self.path = str(path)
        self.position = position
        self.message = message
        where = f" at byte {position}" if position is not None else ""
        super().__init__(f"{self.path}{where}: {message}")

    def __reduce__(self):  # picklable across Ray workers
        return (type(self), (self.path, self.position, self.message))


class ImageError(ValueError):
    """An image that cannot be used; `reason` is the human-readable failure reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)

    def __reduce__(self):
        return (type(self), (self.reason,))
