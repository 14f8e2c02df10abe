"""The command line's errors, in a leaf module so that the experiment modules can raise them
without importing :mod:`runner.cli.commands`.

* :class:`UsageError`: a bad flag or argument (a :class:`sim.errors.UserError`): one line,
  exit status 2;
* :class:`ProviderUnreachable`: the provider cannot be reached (the environment, not a bug):
  one line, exit status 1.
"""

from __future__ import annotations

from sim.errors import UserError

__all__ = ["ProviderUnreachable", "UsageError", "UserError"]


class UsageError(UserError):
    """A user error on the command line: printed as one line, exit status 2."""


class ProviderUnreachable(Exception):
    """The provider (or its health endpoint) cannot be reached: one line, exit status 1."""
