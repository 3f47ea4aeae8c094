"""The library's errors for input the user must fix (not bugs).

Front-ends print these as one line (launchers exit 2); the message names the
setting, file or folder, and what is wrong with it.
"""


class InputError(ValueError):
    """A setting, file or folder given by the user cannot be used."""


class ConfigError(InputError):
    """A setting that cannot run. `field` names the config field (the
    launchers turn it into the flag of the same name)."""

    def __init__(self, field: str, value, why: str, owner: str = "TrainConfig"):
        self.field, self.value, self.why = field, value, why
        super().__init__(f"{owner}.{field}={value!r}: {why}")


class Stopped(Exception):
    """A run stopped on request (a signal) after saving what it had done: not
    an error. Front-ends print it as one line and exit with `exit_code`."""

    exit_code = 1
