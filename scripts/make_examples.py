#!/usr/bin/env python3
"""Write a small tagged example library of generated songs: `python scripts/make_examples.py examples/`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.examples import make_examples  # noqa: E402

if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "examples")
    for path in make_examples(folder):
        print(path)
