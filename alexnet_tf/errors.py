"""The library's errors for input the user must fix (not bugs).

Front-ends print these as one line (launchers exit 2); the message names the
setting, file or folder, and what is wrong with it.
"""


class InputError(ValueError):
    """A setting, file or folder given by the user cannot be used."""
