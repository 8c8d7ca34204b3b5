"""`--help-config`: print every key a config file may set, with its type, default and help.

The rows come from the config dataclasses themselves (`framework.configtree.describe`: the help is
each field's metadata or the comment next to its default), so the listing cannot drift from what
the loader accepts. Like `--help`, the flag prints and exits while arguments are parsed, so it
works without a config file.
"""

from __future__ import annotations

import argparse
from typing import Callable


def add_help_config(
    parser: argparse.ArgumentParser, rows: Callable[[], list[tuple[str, str, str, str]]], what: str
) -> None:
    """Add `--help-config` to `parser`; `rows()` is called only when the flag is given."""

    class _Print(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            from framework.configtree import format_help

            print(format_help(rows()))
            parser.exit(0)

    parser.add_argument(
        "--help-config",
        nargs=0,
        action=_Print,
        help=f"print every {what} key (dotted), its type, default and help, and exit",
    )


def run_config_rows() -> list[tuple[str, str, str, str]]:
    from framework.config import RunConfig
    from framework.configtree import describe

    return describe(RunConfig)


def sweep_config_rows() -> list[tuple[str, str, str, str]]:
    from framework.configtree import describe
    from framework.scaling.config import SweepConfig

    return describe(SweepConfig)


def recipe_config_rows() -> list[tuple[str, str, str, str]]:
    """A curation recipe's keys, then every registered step's parameters as `steps.NAME.PARAM`
    (in a recipe they are written `steps: [{NAME: {PARAM: value}}]`)."""
    from data_pipeline.pipeline import RecipeConfig
    from data_pipeline.steps.base import load_registry
    from framework.configtree import describe

    rows = describe(RecipeConfig)
    for name, step in sorted(load_registry().items()):
        rows += describe(step.Params, f"steps.{name}.")
    return rows
