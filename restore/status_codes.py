"""Exit codes of `mp3restore` (as pip keeps its own in status_codes.py): one place, so the
README, the CLI and the summary's `exit_code` agree."""

EXIT_OK = 0                # everything asked is done (now, earlier, or by another run)
EXIT_SONGS_FAILED = 1      # some songs failed or were left undone (the summary says which, and why); the rest are done
EXIT_USAGE = 2             # bad flags or inputs
EXIT_SETUP = 3             # the output folder (or models folder) cannot be used
EXIT_REPORT_FAILED = 4     # every song is done, but the compare report could not be written (the summary says why)
EXIT_INTERRUPTED = 130     # Ctrl+C: finished songs are kept
