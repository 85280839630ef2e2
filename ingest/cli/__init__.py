"""The command line (a thin face of the core): ``ingest`` subcommands, and the runner behind ``run``/``add``/``worker``."""
from ingest.cli.main import main  # noqa: F401
