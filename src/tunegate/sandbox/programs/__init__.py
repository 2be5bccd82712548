"""The programs that run inside the sandbox, kept as real files so that linters see them.

`source(name)` is a program's text as it runs. A Python program there cannot import tunegate
(`-I -S`, and its files may be out of the sandbox uid's reach), so the one import of the recorder
a program may have is replaced by the recorder's own text: the harness and the sandbox then code
values with the same source.
"""

from __future__ import annotations

import functools
from importlib.resources import files

_RECORDER_IMPORT = f"from {__name__}.recorder import recorder\n"


@functools.cache
def source(name: str) -> str:
    """The text of the program file `name` (e.g. "python_worker.py"), ready to run."""
    text = files(__name__).joinpath(name).read_text(encoding="utf-8")
    if _RECORDER_IMPORT in text:
        recorder = files(__name__).joinpath("recorder.py").read_text(encoding="utf-8")
        text = text.replace(_RECORDER_IMPORT, recorder, 1)
    return text
