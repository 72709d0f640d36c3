"""`python -m restore ...`"""
import sys

from restore.cli import main

sys.exit(main())
