"""The ways into snlm: the CLI, the ticket webhook and plan files. They start, signal, update and query
workflows through Temporal and never touch a host."""
