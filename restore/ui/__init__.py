"""The edge: the command line (cli.py), the keyboard menu (menu.py), rich rendering of
events and summaries (console.py) and one module per subcommand (commands/). Everything here
only builds a run configuration and calls the library; nothing below imports it.
"""
