"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

import re

_OPTION = re.compile(r"\{([a-z_]+)\}")


class QcompileError(Exception):
    """A problem with the user's input or environment, explained in one line.

    A message names an option of the request as `{field}` (e.g. `{calib}`): the Python API shows the field's
    name, the command line its flag (`render`), so that no flag name is written outside `cli.py`."""

    def render(self, names: dict[str, str] | None = None) -> str:
        text = str(self.args[0]) if self.args else ""
        return _OPTION.sub(lambda m: (names or {}).get(m.group(1), m.group(1)), text)

    def __str__(self) -> str:
        return self.render()
