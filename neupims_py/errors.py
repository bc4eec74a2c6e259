"""User-facing errors: raised for bad input anywhere, caught once by the CLI (exit code 2)."""


class UserError(Exception):
    """A mistake in the user's input (a file, a field, a flag), with the fix in the message.

    The CLI prints the message without a traceback and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}: "
        if field is not None:
            where += f"{field}: "
        super().__init__(where + message)
        self.path = path
        self.field = field
