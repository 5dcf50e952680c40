"""`study predict`: answers from a study's chosen model (or any finished trial's), read-only.

- `--countries Italy,Spain`: P(increase of new cases) on the day after the data's last day, from each country's last
  L days (a trainable whose model has `latest`, as covid's does; the data folder is the trial's own unless
  `--data-dir` names another);
- `--samples N --to grid.png`: N generated images as a grid (a trainable that declares `ModelSpec.sample`);
- `--input FILE`: a CSV or .npy file through the trainable's declared `predict`, a CSV out (`--to`, or stdout).

The model is `analysis.models.load_model`'s (the trainable's `Trainable.model`). Nothing is written but `--to`.
"""
from __future__ import annotations

import argparse
import math
import os
import stat
import sys
from pathlib import Path
from typing import Any

from study.cli import UsageError
from study.cmd_show import _open, _source

INPUT_SUFFIXES = (".csv", ".npy")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="predict with a study's chosen model: next-day P(increase) per country, VAE samples, a file",
        description="Predict with the chosen trial's model of a part (or --trial's), loaded through its trainable's "
                    "model declaration (Trainable.model). Give one of --countries, --samples, --input.")
    _source(p)
    p.add_argument("--part", required=True, help="the part whose model predicts (covid, vae, a plugin's part)")
    p.add_argument("--trial", help="a finished trial's id (as `study show` lists it) instead of the chosen one")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--countries", help="comma-separated country names as in the CSSE file (e.g. Italy,Spain,US)")
    what.add_argument("--samples", type=int, help="this many generated images, written as a PNG grid to --to")
    what.add_argument("--input", help="a .csv (a header row, one input per row) or .npy file of inputs")
    p.add_argument("--to", help="write here: a .csv for --countries/--input (default: print), a .png for --samples")
    p.add_argument("--data-dir", help="for --countries: the data folder to read the countries' last days from "
                                      "(default: the trial's own)")
    p.add_argument("--seed", type=int, default=0, help="for --samples: the prior's random seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device to load the model on (default cpu)")
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    _check_args(args)
    study = _open(args)
    from analysis.models import load_model
    from data.errors import DataError

    model = load_model(study, args.part, args.trial, args.device)
    which = f"{args.part}, trial {model.trial_id}" + ("" if args.trial else " (chosen)")
    if args.countries is not None:
        if not callable(getattr(model.model, "latest", None)):
            raise DataError(f"part {args.part}'s model ({model.trainable.name}) does not read countries' last days "
                            "(its model has no latest()); give --input FILE")
        names = [c.strip() for c in args.countries.split(",") if c.strip()]
        table = model.latest(names, data_dir=args.data_dir)
        _countries(table, which, args.to)
    elif args.samples is not None:
        if model.trainable.model.sample is None:
            raise DataError(f"part {args.part}'s trainable {model.trainable.name} declares no sampler "
                            "(ModelSpec.sample); give --input FILE")
        images = model.sample(args.samples, args.seed)
        write_grid(images, Path(args.to))
        print(f"{which}: {args.samples} samples (seed {args.seed}) -> {args.to}")
    else:
        path = Path(args.input)
        inputs = read_inputs(path)
        try:
            out = model.predict(inputs)
        except ValueError as err:  # the model's own check of the inputs' shape or values
            raise DataError(f"not an input of part {args.part}'s model: {_line(err)} (it takes "
                            f"{model.describe or 'what its trainable documents'})", path) from None
        if args.to:
            out.to_csv(args.to, index=False)
            print(f"{which}: {len(out)} rows -> {args.to}")
        else:
            out.to_csv(sys.stdout, index=False)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    """Flag combinations, before anything is opened: nothing is read or created for a usage error."""
    if args.samples is not None:
        if args.samples < 1:
            raise UsageError(f"--samples {args.samples}: give 1 or more")
        if not args.to or not args.to.lower().endswith(".png"):
            raise UsageError("--samples writes a PNG grid: give --to FILE.png")
    elif args.to and not args.to.lower().endswith(".csv"):
        raise UsageError(f"--to {args.to}: --countries and --input write a .csv")
    if args.data_dir and args.countries is None:
        raise UsageError("--data-dir is for --countries")
    if args.input is not None and not args.input.lower().endswith(INPUT_SUFFIXES):
        raise UsageError(f"--input {args.input}: give a .csv or .npy file")


def _countries(table: Any, which: str, to: str | None) -> None:
    if to:
        table.to_csv(to)
    date = table["date"].iloc[0] if len(table) else "?"
    print(f"{which}: P(increase of new cases) on {date}, the day after the data's last day")
    width = max([len(str(c)) for c in table.index] + [7])
    for country, row in table.iterrows():
        spread = f"  (std {row.p_increase_std:.4f} over the seeds)" if row.p_increase_std > 0 else ""
        print(f"  {country:<{width}}  {row.iso2 or '--':>2}  {row.p_increase:.4f}{spread}")
    if to:
        print(f"-> {to}")


def read_inputs(path: Path) -> Any:
    """A .npy (numeric, no pickled objects) or .csv (a header row) file as an array or DataFrame; a DataError line
    naming the file for anything else."""
    import numpy as np
    import pandas as pd

    from data.errors import DataError

    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise DataError(f"cannot read it ({err.strerror or err})", path) from None
    if not stat.S_ISREG(mode):
        raise DataError("not a regular file (a folder, a FIFO or a device): name a file", path)
    try:
        if path.suffix.lower() == ".npy":
            data = np.load(path, allow_pickle=False)
            if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
                raise ValueError(f"a {data.dtype} array; give numbers")
            return data
        frame = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"cannot read it as {path.suffix.lower()[1:].upper()} ({_line(err)})", path) from None
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(f"column {bad[0]!r} is not numeric", path)
    if frame.empty:
        raise DataError("no rows", path)
    return frame


def write_grid(images: Any, path: Path) -> None:
    """Images (n, 3, H, W) or (n, H, W), uint8 or floats in [0, 1], as one PNG of a near-square grid (white gaps
    where the last row is short), each image at least 64 pixels wide."""
    import numpy as np
    from PIL import Image

    x = np.asarray(images)
    if x.dtype != np.uint8:
        x = np.round(np.clip(x.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    if x.ndim == 3:
        x = np.repeat(x[:, None], 3, axis=1)
    n, _, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, img in enumerate(x):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img[:3].transpose(1, 2, 0)
    scale = max(1, 64 // w)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((cols * w * scale, rows * h * scale), Image.NEAREST).save(path)


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
