"""The error a user can act on, from any package: a stage or the CLI reports it as one line."""


class DataError(ValueError):
    """Input that cannot be used as a whole: a missing or malformed folder, file or label table
    (wrong layout, empty class, a model without its operating point)."""
