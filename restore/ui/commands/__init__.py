"""One module per `mp3restore` subcommand that is more than a call into the library, and the
argument types they share."""
from __future__ import annotations

import argparse


def jobs_count(raw: str) -> int:
    """--jobs N (run, report, keep): songs at once, a whole number from 1 up."""
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of songs (1, 2, 4, ...)")
    return n
