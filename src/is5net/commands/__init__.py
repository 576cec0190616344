"""One module per ``is5net`` subcommand, the rembg way: thin commands over the library.

Each declares ``add_arguments(parser)`` (its docstring is the ``--help`` description) and ``run(args) -> int``,
which turns the arguments into library calls and returns the exit status. At module level a command imports
nothing heavy (``is5net --help`` imports them all; ``tests/test_startup.py`` checks it loads no torch);
``run`` imports what it drives. :mod:`~is5net.commands.options` holds the argument groups several share.
"""
