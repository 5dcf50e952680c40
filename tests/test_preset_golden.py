"""The shipped presets and the searcher give the trials the presets in code gave: same constants, same configs.

tests/golden/preset_trials.json was recorded from the presets as Python data and Ray's OptunaSearch (define-by-run:
`study.ask()`, then every space key suggested in order): for each preset, trainable and seed, the part's
settings and the configs `suggest` returned for `total_trials` trials with no results told. `OptunaSearcher`
asks `study.ask(fixed_distributions=space)` in the same key order, from a TPE sampler with the same settings,
so it must give the same values, float for float.
"""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from study import studyfile
from study.space import build_searcher, storage_url

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "preset_trials.json").read_text())


def _case(key: str):
    preset, trainable, seed = key.split("/")
    return studyfile.preset_part(preset, trainable), int(seed), GOLDEN[key]


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_preset_part_is_the_recorded_one(key):
    part, _, golden = _case(key)
    assert part.constants == golden["constants"]
    assert (part.metric, part.mode) == (golden["metric"], golden["mode"])
    assert (part.scheduler, part.grace_period) == (golden["scheduler"], golden["grace_period"])
    assert part.total_trials == len(golden["configs"])


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_searcher_suggests_the_recorded_configs(key):
    part, seed, golden = _case(key)
    searcher = build_searcher(part, seed=seed)
    configs = [searcher.suggest(f"t{i}") for i in range(part.total_trials)]
    assert configs == golden["configs"]


def test_the_sqlite_storage_draws_the_same_values(tmp_path):
    """The study folder's storage (what `study run` uses) changes nothing in what TPE draws."""
    part, seed, golden = _case("smoke/covid/7")
    searcher = build_searcher(part, seed=seed, storage=storage_url(tmp_path))
    assert [searcher.suggest(f"t{i}") for i in range(part.total_trials)] == golden["configs"]
