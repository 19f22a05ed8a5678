"""The command handlers behind cli.py: each takes the parsed arguments and
returns an exit status."""
