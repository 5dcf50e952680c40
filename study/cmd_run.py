"""`study run` and `study resume`: flags checked here, before Ray starts, so mistakes cost nothing."""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from data.inputs import InputError, parse_bounded, read_input
from study import studyfile
from study.cli import UsageError
from trainables.names import STUDY_STATE


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a study: Ray Tune trials searched by Optuna, tracked in MLflow")
    run.add_argument("target", metavar="STUDY",
                     help="a study file (TOML; see `study preset show homework`), or a part of a preset "
                          "(covid, vae; homework: all of them)")
    run.add_argument("--preset", choices=studyfile.preset_names(),
                     help="with a preset's part or homework: the preset file (default homework)")
    run.add_argument("--num-samples", type=int, help="search trials per part on top of the fixed runs")
    run.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as resources allow)")
    run.add_argument("--cpus-per-trial", type=float, default=1.0)
    run.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions pack trials on one GPU")
    run.add_argument("--scheduler", choices=("asha", "none"), help="default: the preset's")
    run.add_argument("--max-failures", type=int,
                     help="retries, from its last checkpoint, of a trial whose worker or node died (default: 3 with "
                          "--address, 0 on this machine; a trial's own error is never retried)")
    run.add_argument("--verbose", action="store_true", help="Ray's table of every trial instead of one progress line")
    run.add_argument("--epochs", type=int, help="override the preset's epochs per trial")
    run.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                     help="an existing Ray cluster (default: $RAY_ADDRESS, else a local one)")
    run.add_argument("--storage", default="studies", help="folder of study folders (default ./studies)")
    run.add_argument("--mlflow-uri", help="tracking URI (default: sqlite store in the study folder)")
    run.add_argument("--name", help="study name (default: the file's name, else STUDY-PRESET-TIMESTAMP)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--fixed", help="extra fixed runs: a JSON list of configs, or a path to a JSON file of one")
    run.add_argument("--data-dir", help="data folder (default: $STUDY_DATA_DIR, else the per-user cache)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                     help="a trainable setting for every trial, over the preset's (repeatable; VALUE is JSON or "
                          "text), e.g. --set date_range=full")
    run.add_argument("--profile", action="store_true",
                     help="at the end of a successful run, where the time went (as `study show --profile`)")
    run.set_defaults(handler=_run)

    resume = sub.add_parser("resume", help="continue an interrupted study from its folder")
    resume.add_argument("study_dir", help="the study folder (STORAGE/NAME)")
    resume.set_defaults(handler=_resume)


def _validate(args: argparse.Namespace) -> None:
    for flag, low in (("num_samples", 0), ("max_concurrent", 1), ("epochs", 1), ("max_failures", 0)):
        value = getattr(args, flag)
        if value is not None and value < low:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= {low}, got {value}")
    if args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.gpus_per_trial < 0:
        raise UsageError(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial}")
    # One line each (exit 2), before a folder, a run or Ray exists; see study.checks.
    from study import checks
    from study.local_ray import check_ray_address

    if args.name is not None:
        checks.check_name(args.name)
    checks.check_seed(args.seed)
    checks.check_storage(args.storage)
    checks.probe_mlflow(args.mlflow_uri)
    if args.address:
        check_ray_address(args.address)
    else:
        if args.cpus_per_trial > (os.cpu_count() or 1):
            raise checks.FlagError(f"--cpus-per-trial {args.cpus_per_trial:g}: this machine has "
                                   f"{os.cpu_count()} CPUs")
        checks.check_local_gpus(args.gpus_per_trial)


def _fixed_runs(value: str | None, study: studyfile.StudyFile) -> list[dict]:
    from study import checks

    if not value:
        return []
    if len(study.parts) != 1:
        raise checks.FlagError("--fixed needs a study of one part: use it with one preset part (`study run "
                               "covid`) or a file of one part")
    text = value
    if not value.lstrip().startswith("["):  # else a path to a JSON file (a long JSON text is no file name)
        try:
            text = read_input(value)
        except InputError as err:
            raise checks.FlagError(f"--fixed {value[:80]!r}: neither a JSON list nor a readable file ({err})") from None
    try:
        runs = parse_bounded(json.loads, text)
    except json.JSONDecodeError as err:
        raise checks.FlagError(f"--fixed: not JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except InputError as err:
        raise checks.FlagError(f"--fixed: {err}") from None
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise checks.FlagError("--fixed: expected a JSON list of objects, one per run")
    return runs


def _settings(values: list[str], study: studyfile.StudyFile, source: str) -> dict:
    from study.checks import FlagError
    from study.spec import check_settings

    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = parse_bounded(json.loads, raw)
        except json.JSONDecodeError:
            value = raw  # plain text: --set date_range=full
        except InputError as err:
            raise FlagError(f"--set {key.strip()}: {err}") from None
        out[key.strip()] = value
    try:
        check_settings(study, out, source)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return out


def _run(args: argparse.Namespace) -> int:
    # First thing, before anything imports ray: what a local study's Ray reads at import (study.local_ray).
    from study.local_ray import study_environment
    from study.stop import sigterm_as_ctrl_c

    # A SIGTERM stops the study as a Ctrl-C does (exit 143 instead of 130; see study.stop).
    with study_environment(args.address), sigterm_as_ctrl_c():
        return _new_study(args)


def _new_study(args: argparse.Namespace) -> int:
    from study import checks

    _validate(args)
    study, stem = studyfile.resolve(args.target, args.preset)
    from_preset = studyfile.is_preset_target(args.target)
    source = f"the {args.preset or studyfile.ALL_PARTS} preset" if from_preset else args.target
    extra_fixed = _fixed_runs(args.fixed, study)
    settings = _settings(args.settings, study, source)
    from study.runner import run_study
    from study.spec import StudySpec, with_overrides
    from study.tracking import default_uri

    preset = (args.preset or studyfile.ALL_PARTS) if from_preset else None
    stamp = time.strftime('%Y%m%d-%H%M%S')
    name = args.name or study.name or (f"{stem}-{preset}-{stamp}" if preset else f"{stem}-{stamp}")
    if not checks.name_ok(name):  # from the file's name: --name and `name =` were checked as they were read
        raise checks.FlagError(f"{args.target}: the study would be named {name!r} after the file, against the "
                               f"name rule ({checks.NAME_RULE}): rename the file or give --name")
    study_dir = Path(args.storage).resolve() / name
    if (study_dir / STUDY_STATE).exists():
        raise UsageError(f"{study_dir} already holds a study; continue it with `study resume {study_dir}` or pick --name")
    data_dir = args.data_dir
    if data_dir is None and os.environ.get("STUDY_DATA_DIR"):
        data_dir = os.environ["STUDY_DATA_DIR"]  # trials on other nodes may not share our environment
    spec = StudySpec(
        target=args.target, preset=preset, name=name, study_dir=str(study_dir),
        mlflow_uri=args.mlflow_uri or default_uri(study_dir), seed=args.seed, num_samples=args.num_samples,
        max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        scheduler=args.scheduler, max_failures=_max_failures(args), verbose=args.verbose, address=args.address,
        data_dir=str(Path(data_dir).resolve()) if data_dir else None, epochs=args.epochs, extra_fixed=extra_fixed,
        settings=settings, plugin_dir=None if from_preset else str(Path(args.target).resolve().parent),
    )
    study = with_overrides(study, spec)
    for part in study.parts:  # --fixed runs named as the user gave them, not as run N of the study
        for i, run in enumerate(extra_fixed):
            try:
                studyfile.trial_config(part, run)
            except (ValueError, TypeError) as err:
                raise checks.FlagError(f"--fixed run {i + 1} {checks.short(run)}: {err}") from None
    # Read back as the folder will hold it: every override meets the same checks as a file's own values.
    study = studyfile.parse(studyfile.dumps(study), f"{source} with the command line's settings", spec.plugin_dir)
    code = run_study(spec, study)
    if code == 0 and args.profile:
        from study.profile import print_after_run

        print_after_run(study_dir)
    return code


def _max_failures(args: argparse.Namespace) -> int:
    from study.faults import default_max_failures

    return default_max_failures(args.max_failures, args.address)


def _resume(args: argparse.Namespace) -> int:
    from study.local_ray import study_environment
    from study.spec import load_spec  # imports no ray
    from study.stop import sigterm_as_ctrl_c

    spec = load_spec(args.study_dir)
    # Before anything imports ray: what a local study's Ray reads at import (study.local_ray).
    with study_environment(spec.address), sigterm_as_ctrl_c():  # a SIGTERM is a Ctrl-C (study.stop)
        return _resume_study(spec)


def _resume_study(spec) -> int:
    from study.runner import run_study

    from study import checks
    from study.local_ray import check_ray_address

    checks.probe_mlflow(spec.mlflow_uri)
    if spec.address:
        check_ray_address(spec.address)
    else:
        checks.check_local_gpus(spec.gpus_per_trial)
    return run_study(spec)  # the folder's study file was checked as it was read
