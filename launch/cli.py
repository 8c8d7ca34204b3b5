"""`anvil`: the one command-line door. Parses arguments and calls one function; no logic here.

Subcommands live in `launch/commands/*.py`; each module exposes `COMMANDS`, a list of `Command`
entries whose `path` places them in the tree (`("data", "run")` is `anvil data run`). Modules are
discovered, so adding a subcommand never edits this file. Heavy imports (torch, deepspeed) happen
inside handlers, so `anvil --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from dataclasses import dataclass
from typing import Callable

from framework.configtree import ConfigError


@dataclass
class Command:
    path: tuple[str, ...]
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str = ""


GROUP_HELP = {
    "data": "curation, deduplication and tokenization of text corpora",
    "tokenizer": "train tokenizers",
    "sweep": "plan, run and fit scaling-law sweeps",
    "export": "export checkpoints to other formats",
    "import": "import checkpoints from other formats",
    "model": "inspect model configurations",
    "checkpoint": "inspect, verify, consolidate and convert checkpoints",
}


def discover() -> list[Command]:
    import launch.commands as pkg

    commands: list[Command] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"launch.commands.{info.name}")
        commands.extend(getattr(module, "COMMANDS", []))
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anvil",
        description="Anvil: raw web text -> curated corpora -> trained language models -> scaling laws.",
    )
    root = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): root}
    for cmd in sorted(discover(), key=lambda c: c.path):
        for depth in range(1, len(cmd.path)):
            prefix = cmd.path[:depth]
            if prefix not in groups:
                name = prefix[-1]
                gp = groups[prefix[:-1]].add_parser(
                    name, help=GROUP_HELP.get(name, name), description=GROUP_HELP.get(name)
                )
                groups[prefix] = gp.add_subparsers(dest="_".join(prefix) + "_cmd", metavar="COMMAND")
                gp.set_defaults(_group_parser=gp)
        sub = groups[cmd.path[:-1]].add_parser(
            cmd.path[-1],
            help=cmd.help,
            description=cmd.description or cmd.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.configure(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        (getattr(args, "_group_parser", None) or parser).print_help()
        return 0 if argv is None and len(sys.argv) <= 1 else 2
    try:
        code = run(args)
    except ConfigError as exc:
        print(f"anvil: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"anvil: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("anvil: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
