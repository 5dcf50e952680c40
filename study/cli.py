"""The one command line: `study data|run|resume|preset|trainables|show|export|report|predict|bench`.

Heavy imports (torch, ray, mlflow) happen inside the subcommand handlers so `study --help` and argument
errors answer at once (tests/test_plugins.py checks that torch and ray stay out).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from data.errors import DataError
from study import stop


class UsageError(Exception):
    """A bad flag value found after parsing; printed as a usage error, exit 2."""


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="folder with covid/ and anime_faces/, only ever read (default: $STUDY_DATA_DIR, else the per-user cache)",
    )
    p.add_argument(
        "--cache-dir",
        help="folder for the image cache and a downloaded CSV (default: $STUDY_CACHE_DIR, else the per-user cache)",
    )


def _data_check(args: argparse.Namespace) -> int:
    from data.check import DATASETS, run_check

    result = run_check(args.data_dir, seq_len=args.seq_len, size=args.size,
                       datasets=(args.dataset,) if args.dataset else DATASETS,
                       date_range=args.date_range, cache_dir=args.cache_dir)
    print(result.text)
    for line in result.errors:
        print(f"study: error: {line}", file=sys.stderr)
    return result.code


def _data_prepare(args: argparse.Namespace) -> int:
    from data.check import run_prepare

    print(run_prepare(args.data_dir, size=args.size, resample=args.resample, cache_dir=args.cache_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="check and prepare the datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_sub.add_parser(
        "check", help="validate the datasets and print what a study would see",
        description="Check one dataset, or both: with no DATASET a missing one is reported in one line and the "
                    "other is still checked. Exit 0 when what was asked for is present and valid, else 2.",
    )
    check.add_argument("dataset", nargs="?", choices=("covid", "faces"), metavar="DATASET",
                       help="covid or faces (default: both)")
    _add_data_dir(check)
    check.add_argument("--seq-len", type=int, default=30, help="window length L for the window counts (default 30)")
    check.add_argument("--date-range", default="homework",
                       help="days for set C and the windows: full, homework (2020-01-22..2020-05-22, what the "
                            "presets train on; the default) or YYYY-MM-DD..YYYY-MM-DD")
    check.add_argument("--size", type=int, default=64, help="image size whose cache is reported (default 64)")
    check.set_defaults(handler=_data_check)
    prepare = data_sub.add_parser("prepare", help="build the image cache (uint8 N x 3 x S x S) in the cache folder")
    _add_data_dir(prepare)
    prepare.add_argument("--size", type=int, default=64, choices=(16, 28, 32, 64))
    prepare.add_argument("--resample", default="bilinear", choices=("nearest", "bilinear", "bicubic", "lanczos", "box"))
    prepare.set_defaults(handler=_data_prepare)

    for register in _plugins():
        register(sub)
    return parser


def _plugins() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands that live in their own modules (run/resume, preset, show/export, report, predict, bench)."""
    found = []
    for module, attr in (("study.cmd_run", "register"), ("study.cmd_preset", "register"),
                         ("study.cmd_trainables", "register"), ("study.cmd_show", "register"),
                         ("study.cmd_report", "register"), ("study.cmd_predict", "register"),
                         ("study.bench.cli", "register")):
        try:
            mod = __import__(module, fromlist=[attr])
        except ModuleNotFoundError as err:
            if err.name == module:
                continue
            raise
        found.append(getattr(mod, attr))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = stop.exit_code(int(args.handler(args) or 0))  # 143 for a study that a SIGTERM stopped
    except UsageError as err:
        parser.print_usage(sys.stderr)
        print(f"study: error: {err}", file=sys.stderr)
        code = 2
    except DataError as err:
        print(f"study: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("study: interrupted" + (" (SIGTERM)" if stop.terminated() else ""), file=sys.stderr)
        code = stop.exit_code(130)
    return stop.leave(code)  # ends the process itself after an interrupted ray.init (study.stop)


if __name__ == "__main__":
    # Run as `python -m study.cli` this file is `__main__`, and the subcommands' `from study.cli import
    # UsageError` would load a second copy whose exceptions `main` here would not catch.
    from study.cli import main as _main

    sys.exit(_main())
