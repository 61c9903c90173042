"""Errors a user can cause; the CLI turns each into one clear line."""

from __future__ import annotations


class UserError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class DataError(UserError):
    """A data set that is missing, unreadable or not in a known layout."""


class WeightsError(UserError):
    """Model weights that cannot be found, downloaded or matched to the model."""


class RunError(UserError):
    """A run folder that is missing, incomplete or in the way."""
