"""The one error type of the command line, apart from the parser so every command can raise it."""


class CliError(Exception):
    """Bad input from the user: printed as `error: <message>`, exit status 2."""
