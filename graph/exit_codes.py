"""Exit codes of the ``migval`` commands (README.md, "The `migval` command")."""

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed (a bad check, an unreachable database)
EXIT_USAGE = 2  # bad arguments or configuration, as argparse exits
