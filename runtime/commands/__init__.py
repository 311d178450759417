"""The `bertx` commands, one module per group; `bertx.cli` puts them together."""
