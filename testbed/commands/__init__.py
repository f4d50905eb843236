"""CLI subcommands; every module here with a ``register(subparsers)`` is picked up by ``testbed.cli``."""
