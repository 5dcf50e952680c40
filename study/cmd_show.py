"""`study show` and `study export`: a study's trials in the terminal or as CSV files, read-only (no lock), so
they work on a finished study and on one that is running."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from study.cli import UsageError

# Columns that are not settings a search varies.
NOT_PARAMS = {"seed", "data_dir", "device", "num_threads", "epochs"}


def register(sub: argparse._SubParsersAction) -> None:
    show = sub.add_parser("show", help="a study's trials by state, the best ones, the chosen trial beside the baselines")
    _source(show)
    show.add_argument("--top", type=int, default=5, help="trials to list per part, best first (default 5)")
    show.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    show.add_argument("--profile", action="store_true",
                      help="where the time went instead: per part and trial, training, evaluation, end-of-run and "
                           "overhead seconds, each as a share of wall x concurrent trials")
    show.set_defaults(handler=_show)
    export = sub.add_parser("export", help="write trials.csv, history.csv, baselines.csv (and .parquet with pyarrow)")
    _source(export)
    export.add_argument("--to", required=True, help="folder to write the files into")
    export.set_defaults(handler=_export)


def _source(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="NAME|DIR", nargs="?", help="a study folder, or a study's name under --storage")
    p.add_argument("--storage", default="studies", help="folder of study folders (default ./studies)")
    p.add_argument("--name", help="the study's name under --storage (as `study report` takes it), for NAME")
    p.add_argument("--mlflow-uri", help="read the study NAME from this MLflow tracking URI instead")


def _open(args: argparse.Namespace) -> Any:
    from study.checks import probe_mlflow

    if args.study and args.name and args.study != args.name:
        raise UsageError(f"two studies given: {args.study} and --name {args.name}")
    if not (args.study or args.name):
        raise UsageError("which study? give a study folder, or NAME (or --name NAME) under --storage")
    probe_mlflow(args.mlflow_uri)  # a server that does not answer: one line in seconds, not MLflow's retries
    from analysis import open_study

    return open_study(args.study or args.name, storage=args.storage, tracking_uri=args.mlflow_uri)


def summary(study: Any, top: int) -> dict[str, Any]:
    """Per part (built-in or plugin): counts by state, the top trials on the objective the study logged for it,
    with the settings that vary, and the choice. Reads only what the study logged: no trainable is imported."""
    out: dict[str, Any] = {"name": study.name, "parts": {}}
    for part, trials in study.trials.groupby("part", sort=False):
        metric, mode = study.objective(part)
        varying = [c for c in study.config_keys(part) if c in trials and c not in NOT_PARAMS
                   and trials[c].astype(str).nunique() > 1]
        # A part whose trials have not reported yet has no objective column: its counts, and no ranking.
        ranked = trials.dropna(subset=[metric]).sort_values(metric, ascending=mode == "min").head(top) \
            if metric in trials else trials.iloc[0:0]
        cols = ["trial_id", "group", "state", metric, f"{metric}_std", *varying, "epochs_run"]
        info: dict[str, Any] = {
            "states": {k: int(v) for k, v in trials.state.value_counts().items()},
            "metric": metric, "mode": mode,
            "top": json.loads(ranked[[c for c in cols if c in ranked]].to_json(orient="records")),
        }
        if trials.chosen.any():
            chosen = study.chosen(part)
            info["chosen"] = {"trial_id": chosen["trial"].trial_id, metric: float(chosen["trial"][metric]),
                              "test": {k: float(v) for k, v in chosen["test"].items()}}
            if "baselines" in chosen and not chosen["baselines"].empty:
                info["chosen"]["baselines"] = json.loads(chosen["baselines"].to_json(orient="records"))
        out["parts"][part] = info
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1e4 else f"{value:.4g}"  # counts stay counts
    return str(value)


def _show(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.profile:
        from study.profile import format_profile, profile

        parts = profile(_open(args))
        print(json.dumps(parts, indent=2) if args.json else format_profile(parts))
        return 0
    info = summary(_open(args), args.top)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"study {info['name']}")
    for part, p in info["parts"].items():
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(p["states"].items()))
        print(f"\n{part}: {states}; objective {p['metric']} ({p['mode']})")
        if p["top"]:
            cols = list(p["top"][0])
            rows = [[_fmt(r.get(c)) for c in cols] for r in p["top"]]
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
            print("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)))
            for r in rows:
                print("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)))
        chosen = p.get("chosen")
        if chosen:
            test = ", ".join(f"{k} {v:.4f}" for k, v in chosen["test"].items())
            print(f"  chosen {chosen['trial_id']} on {p['metric']} {chosen[p['metric']]:.4f}; its test numbers: {test}")
            for b in chosen.get("baselines", []):
                numbers = ", ".join(f"{k} {_fmt(v)}" for k, v in b.items() if k not in ("baseline", "split"))
                print(f"    baseline {b['baseline']} ({b['split']} split): {numbers}")
    return 0


def _export(args: argparse.Namespace) -> int:
    study = _open(args)
    out = Path(args.to)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import pyarrow  # noqa: F401  (optional: Parquet beside the CSVs)
    except ImportError:
        pyarrow = None
    for name in ("trials", "history", "baselines"):
        frame = getattr(study, name)
        frame.to_csv(out / f"{name}.csv", index=False)
        if pyarrow is not None:
            frame.to_parquet(out / f"{name}.parquet", index=False)
    print(f"study: {len(study.trials)} trials, {len(study.history)} history rows, {len(study.baselines)} baseline "
          f"rows written to {out}")
    return 0
