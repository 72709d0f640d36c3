#!/usr/bin/env python3
"""Launcher: `python mp3restore.py ...` is the same as `mp3restore ...`."""
import sys

from restore.ui.cli import main

if __name__ == "__main__":
    sys.exit(main())
