"""The ``userpulse`` command line: the command group (:mod:`~agents.commands.cli`)
and a module per command that has more than a few lines, with what they
share on the terminal and in their options."""
