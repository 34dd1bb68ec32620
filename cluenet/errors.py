"""Exceptions the library raises on bad input.

Every error a user can cause (a bad file, a bad question, a bad config) is a
``ClueNetError`` with a message that says what was got and what was expected,
so the CLI prints one line and the app shows it without a traceback.
"""


class ClueNetError(Exception):
    """Base class: bad input the user can fix."""


class VideoError(ClueNetError):
    """A video that cannot be probed or decoded, or that breaks a named limit."""


class InputError(ClueNetError):
    """A bad question, option list, or other request parameter."""


class ConfigError(ClueNetError):
    """A bad configuration value or file (unknown key, wrong type, out of range)."""


class ModelError(ClueNetError):
    """A model, adapter or filter head that cannot be loaded or does not match."""
