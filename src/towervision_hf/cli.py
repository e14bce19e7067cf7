"""The `towervision` command line (its dispatcher is the top-level `towervision_cli` module, which prints usage and
`--version` without importing this package, torch or transformers)."""

from towervision_cli import COMMANDS, main

__all__ = ["COMMANDS", "main"]
