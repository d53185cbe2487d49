"""The one user-facing error of the project."""


class VaeLabError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2, no traceback."""
