"""User-facing errors: the CLI turns these into a one-paragraph message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (files, config values, names); the message says how to fix it."""
