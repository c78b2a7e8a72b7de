"""Errors a user can cause and fix; the CLI prints them as one line, never as a traceback."""


class AdvisorError(Exception):
    """A problem with the user's input, files or configuration: reported, not crashed on."""


class InputError(AdvisorError):
    """Bad input data: names the file, row or key at fault."""
