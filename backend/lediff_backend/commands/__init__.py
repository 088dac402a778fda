"""One module per ``lediff`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
