"""How the command lines report a user-facing error: `error: <message>` on stderr, exit code 2,
no traceback unless `--debug` is given.

The messages themselves name the file and the problem (they are raised that way). One
wrapping is undone here: an exception raised inside a DataLoader worker reaches the main
process as the same type with a message made of the worker's whole traceback
("Caught ImageReadError in DataLoader worker process 0. Original Traceback ..."); the user
gets the original message instead.
"""

from __future__ import annotations

import re
import sys
import traceback
from typing import TextIO

# Exit code of a run stopped by a user-facing error (argparse uses 2 for bad flags too).
USER_ERROR_EXIT_CODE = 2
_WORKER_WRAPPER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")


def user_message(error: BaseException) -> str:
    """The message of `error`, with a DataLoader worker's traceback wrapper removed."""
    text = str(error)
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    if _WORKER_WRAPPER.match(text):
        # The traceback ends with "<module.>TypeName: <original message>".
        name = re.escape(type(error).__name__)
        ends = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: ", text, flags=re.MULTILINE))
        if ends:
            text = text[ends[-1].end():]
    return text.strip()


def report_user_error(error: BaseException, debug: bool = False,
                      stream: TextIO | None = None) -> int:  # fmt: skip
    """Print `error` for the user (with its traceback when `debug`); returns the exit code."""
    stream = stream if stream is not None else sys.stderr
    if debug:
        traceback.print_exception(error, file=stream)
    print(f"error: {user_message(error)}", file=stream)
    return USER_ERROR_EXIT_CODE
