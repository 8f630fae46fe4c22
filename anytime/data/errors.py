"""The one exception type for bad data input, so entry points can report it as a single line."""

from __future__ import annotations


class DataError(ValueError):
    """Unusable data input (location, archive, format, checksum): the message is one line for a user."""
