"""Errors a user can cause; the CLI turns each into one clear line (exit code 2).

They are `edge.errors.FatalError`s: they stop the command, and carry a stable `code`.
"""

from __future__ import annotations

from edge.errors import FatalError


class UserError(FatalError):
    """Base class: a problem with the user's input, reported without a traceback."""

    code = "invalid_input"
    http_status = 400


class DataError(UserError):
    """A data set that is missing, unreadable or not in a known layout."""

    code = "data_invalid"
    http_status = 422


class WeightsError(UserError):
    """Model weights that cannot be found, downloaded or matched to the model."""

    code = "weights_invalid"
    http_status = 422


class RunError(UserError):
    """A run folder that is missing, incomplete or in the way."""

    code = "run_invalid"
    http_status = 409
