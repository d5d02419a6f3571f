"""User-facing errors: raised with one line that names the file or setting and says what to do."""


class SiamrecError(Exception):
    """A problem with the user's input or configuration; the CLI prints its message as one line, no traceback."""
