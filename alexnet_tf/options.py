"""Config dataclass fields that carry their command-line help.

`option(default, help)` is a `dataclasses.field` whose metadata the
launchers read to define a flag of the same name, type and default, so each
default is written once (see `alexnet_tf/cli/config_flags.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           choices: Sequence[str] = (), lower_bound: float | None = None,
           multi: bool = False, **kwargs) -> Any:
    """A dataclass field with the help text (and choices) its flag shows;
    no default makes it a required field (and a required flag).

    `lower_bound`: the flag refuses smaller numbers as it parses. `multi`: a
    sequence given by repeating the flag (--x=a --x=b), not as a comma list.
    """
    metadata = {"help": help, "choices": tuple(choices), "lower_bound": lower_bound,
                "multi": multi}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata=metadata,
                                 **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)
