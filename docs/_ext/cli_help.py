"""``.. cli-help:: module:function``: the help of an argparse command line and of each
of its subcommands, as literal blocks (the CLI reference comes from the parsers
themselves, so it cannot drift from them)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive


def _subparsers(p: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in p._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            out.extend(action.choices.items())
    return out


class CliHelp(Directive):
    required_arguments = 1

    def run(self) -> list[Any]:
        module, _, name = self.arguments[0].partition(":")
        parser: argparse.ArgumentParser = getattr(importlib.import_module(module), name)()
        parts: list[Any] = [nodes.literal_block(text=parser.format_help().rstrip())]
        for sub, subparser in _subparsers(parser):
            section = nodes.section(ids=[nodes.make_id(f"{parser.prog} {sub}")])
            section += nodes.title(text=f"{parser.prog} {sub}")
            section += nodes.literal_block(text=subparser.format_help().rstrip())
            parts.append(section)
        return parts


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
