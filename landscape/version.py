"""The package version (one place: the package, its files and pyproject.toml's must agree)."""

__version__ = "0.1.0"
