"""`python -m restore ...`"""
import sys

from restore.ui.cli import main

sys.exit(main())
