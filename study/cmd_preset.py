"""`study preset list|show NAME`: the shipped presets are study files; print one to copy and edit."""
from __future__ import annotations

import argparse

from study import studyfile


def register(sub: argparse._SubParsersAction) -> None:
    preset = sub.add_parser("preset", help="list the shipped presets, or print one as a study file to copy")
    actions = preset.add_subparsers(dest="preset_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="the presets' names").set_defaults(handler=_list)
    show = actions.add_parser("show", help="print a preset's study file (`study preset show homework > my.toml`)")
    show.add_argument("name", choices=studyfile.preset_names())
    show.set_defaults(handler=_show)


def _list(args: argparse.Namespace) -> int:
    for name in studyfile.preset_names():
        print(name)
    return 0


def _show(args: argparse.Namespace) -> int:
    print(studyfile.preset_path(args.name).read_text(), end="")
    return 0
