"""The `landscape` command line: each command parses its options and calls the Python API.

Data (``--json``) goes to stdout; progress bars and logs to stderr. User errors
(:class:`landscape.errors.LandscapeError`) become one-line ``click.ClickException``s (exit 1).
"""

from __future__ import annotations

import sys

import click

from landscape.errors import LandscapeError


class _Group(click.Group):
    """A click group that turns LandscapeError into a one-line error with exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LandscapeError as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=_Group)
@click.version_option(package_name="landscape")
def main() -> None:
    """Loss-landscape analysis: train, measure and plot the geometry of minima."""


def command_line() -> str:
    """The command line that invoked this process (stored in result files)."""
    return " ".join(["landscape", *sys.argv[1:]])

