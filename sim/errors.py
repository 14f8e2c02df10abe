"""The one error family for bad user input (a scenario field, an argument, a flag).

A :class:`UserError` is a ``ValueError`` whose message is one line naming the field or flag
and what is allowed; the command line prints it and exits with status 2. Any other
exception is a bug (or the environment) and keeps its traceback. A leaf module: it imports
nothing, so every module of ``sim`` and ``runner`` can raise it.
"""

from __future__ import annotations

__all__ = ["ScenarioError", "UserError"]


class UserError(ValueError):
    """Bad user input: the message is one line naming the field or flag and what is allowed."""


class ScenarioError(UserError):
    """A scenario that cannot be used; the message is one line naming the field."""
