"""`study trainables [STUDY_FILE]`: what a study file may name as `trainable`, with its objective and settings.

Built-ins and installed entry points (group `study.trainables`) always; with a study file, also the
`module:attribute` trainables it names (from files beside it).
"""
from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trainables", help="the trainables a study file may name: where from, objective, settings")
    p.add_argument("study_file", nargs="?", metavar="STUDY_FILE",
                   help="also list the module:attribute trainables this study file names")
    p.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    p.set_defaults(handler=_list)


def _rows(study_file: str | None) -> list[dict[str, Any]]:
    from trainables import registry

    found = [(name, registry.find(name)) for name in registry.names()]
    if study_file:
        from study import studyfile

        seen = {name for name, _ in found}
        for part in studyfile.load(study_file).parts:
            if part.trainable not in seen:
                seen.add(part.trainable)
                found.append((part.trainable, registry.find(part.trainable, part.ship.parent if part.ship else None)))
    return [{"name": ref, "source": f.source, "metric": f.trainable.metric, "mode": f.trainable.mode,
             "description": f.trainable.description, "config": _defaults(ref, f.trainable)} for ref, f in found]


def _defaults(ref: str, trainable: Any) -> dict[str, Any]:
    """Every default as a study file writes it (an Enum's value, a path's text): what a plain run gets."""
    from trainables.registry import PluginError

    try:
        return trainable.full_config({})
    except ValueError as err:  # the config's own __post_init__ refuses its defaults
        raise PluginError(f"{ref!r}: its config refuses its own defaults: {err}") from None


def _list(args: argparse.Namespace) -> int:
    from trainables.registry import PluginError
    from study.cli import UsageError

    try:
        rows = _rows(args.study_file)
    except PluginError as err:  # an installed entry point that does not load
        raise UsageError(str(err)) from None
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        print(f"{row['name']}  ({row['source']})  objective: {row['mode']} {row['metric']}")
        if row["description"]:
            print(f"  {row['description']}")
        print("  " + ", ".join(f"{k}={_short(v)}" for k, v in row["config"].items()))
    return 0


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["register"]
