"""The searcher and presets, without Ray running: what Optuna is told, and that presets are consistent.

Everything about the Optuna study is read back from its storage by a separate reader (`optuna.load_study`), as
optuna-dashboard or the report would, never from the searcher's own objects.
"""
from __future__ import annotations

import pickle
import pickletools
import warnings

import optuna
import pytest

from study import studyfile
from study.space import build_scheduler, build_searcher, split_fixed, storage_url

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _part(preset: str = "smoke", trainable: str = "covid"):
    return studyfile.preset_part(preset, trainable)


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)  # a separate reader, as a dashboard would be


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return sorted(_study(url, name).trials, key=lambda t: t.number)


def _states(url: str, name: str) -> dict[int, str]:
    return {t.number: t.state.name for t in _trials(url, name)}


def test_fixed_runs_come_first_and_exactly():
    part = _part("homework", "covid")
    searcher = build_searcher(part, seed=0)
    searcher.set_search_properties(part.metric, part.mode, {})
    configs = [searcher.suggest(f"t{i}") for i in range(len(part.fixed) + 2)]
    for cfg, run in zip(configs, part.fixed):
        assert cfg["group"] == "fixed"
        assert {k: cfg[k] for k in run} == run  # seed and norm too, though they are not in the space
    assert [c["group"] for c in configs[len(part.fixed):]] == ["search", "search"]


def test_stopped_trial_is_pruned_not_complete(tmp_path):
    part = _part("smoke", "covid")
    url = storage_url(tmp_path)
    searcher = build_searcher(part, seed=0, storage=url)
    searcher.set_search_properties(part.metric, part.mode, {})
    for tid in ("full", "stopped", "failed"):
        searcher.suggest(tid)
    for step in range(1, part.epochs + 1):
        searcher.on_trial_result("full", {part.metric: 0.5 + step / 10, "training_iteration": step})
    searcher.on_trial_complete("full", {part.metric: 0.7, "training_iteration": part.epochs})
    searcher.on_trial_result("stopped", {part.metric: 0.9, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {part.metric: 0.9, "training_iteration": 1})
    searcher.on_trial_complete("failed", None, error=True)
    states = {n: s for n, s in _states(url, part.trainable).items() if s != "WAITING"}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "FAIL"}
    # The stopped trial's score still reaches Optuna, as an intermediate value at the step it got to.
    asked = {t.number: t for t in _trials(url, part.trainable)}
    assert asked[1].intermediate_values == {1: 0.9}
    assert _study(url, part.trainable).best_value == pytest.approx(0.7)


def test_a_full_length_trial_without_its_metric_fails(tmp_path):
    """No objective value (missing or NaN) at the last epoch is a failure, not a complete or pruned trial."""
    part = _part("smoke", "vae")
    url = storage_url(tmp_path)
    searcher = build_searcher(part, seed=0, storage=url)
    for tid in ("none", "nan"):
        searcher.suggest(tid)
    searcher.on_trial_complete("none", {"training_iteration": part.epochs})
    searcher.on_trial_complete("nan", {part.metric: float("nan"), "training_iteration": part.epochs})
    assert [t.state.name for t in _trials(url, "vae")[:2]] == ["FAIL", "FAIL"]


def test_a_step_reported_again_keeps_its_first_value_quietly(tmp_path):
    """After a resume Tune replays an epoch's result; Optuna keeps the first value, and no warning is shown."""
    part = _part("smoke", "covid")
    url = storage_url(tmp_path)
    searcher = build_searcher(part, seed=0, storage=url)
    searcher.suggest("a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        searcher.on_trial_result("a", {part.metric: 0.6, "epoch": 1, "training_iteration": 1})
        searcher.on_trial_result("a", {part.metric: 0.8, "epoch": 1, "training_iteration": 2})
    assert _trials(url, "covid")[0].intermediate_values == {1: 0.6}


@pytest.mark.parametrize("preset", studyfile.preset_names())
@pytest.mark.parametrize("target", ["covid", "vae", "homework"])
def test_presets_are_consistent(preset, target):
    for part in studyfile.resolve(target, preset)[0].parts:
        assert part.metric and part.mode in ("max", "min")
        assert part.total_trials >= 1 and part.epochs >= 1
        points, extras = split_fixed(part)
        for point, extra, run in zip(points, extras, part.fixed):
            assert {**point, **extra} == run
            assert not set(extra) & set(part.space), "a fixed value outside its search range"


def test_unknown_preset_and_target():
    with pytest.raises(studyfile.StudyFileError, match="unknown preset"):
        studyfile.resolve("covid", "nope")
    with pytest.raises(studyfile.StudyFileError, match="no such study file"):
        studyfile.resolve("nope", None)


def test_the_space_is_plain_optuna():
    """The space runs in a plain Optuna study too (analysis scripts can reuse it), and the searcher keeps it."""
    part = _part("search", "vae")
    study = optuna.create_study(direction="minimize")
    for _ in range(3):
        study.tell(study.ask(fixed_distributions=part.space), 1.0)
    assert set(study.trials[0].params) == set(part.space)
    assert build_searcher(part, seed=0).space() == part.space


def _pickled_modules(blob: bytes) -> set[str]:
    """The modules whose classes or functions a pickle refers to."""
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(blob):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(strings[-2])
        elif op.name in ("GLOBAL", "INST"):
            found.add(arg.split(" ")[0])
    return {m.split(".")[0] for m in found}


def test_searcher_pickles_for_resume(tmp_path):
    """Tune saves the searcher with the experiment state: plain values only, and its saved state restores."""
    part = _part("homework", "vae")
    url = storage_url(tmp_path)
    searcher = build_searcher(part, seed=0, storage=url)
    searcher.set_search_properties(part.metric, part.mode, {})
    as_built = pickle.dumps(searcher)
    searcher.suggest("t0")
    blob = pickle.dumps(searcher)
    assert not _pickled_modules(blob) & {"optuna", "sqlalchemy"}  # no live study, storage or trial in it
    searcher.save(str(tmp_path / "s.pkl"))
    again = pickle.loads(as_built)
    again.restore(str(tmp_path / "s.pkl"))
    states = list(_states(url, "vae").values())
    assert states.count("RUNNING") == 1  # the one asked for
    assert states.count("WAITING") == len(part.fixed) - 1  # fixed runs still queued
    assert again.suggest("t1") == {**part.fixed[1], "group": "fixed"}


def test_a_searcher_without_storage_cannot_resume(tmp_path):
    part = _part("smoke", "vae")
    searcher = build_searcher(part, seed=0)
    searcher.save(str(tmp_path / "s.json"))
    with pytest.raises(RuntimeError, match="without a storage URL"):
        pickle.loads(pickle.dumps(searcher)).restore(str(tmp_path / "s.json"))


def test_asha_lets_last_epoch_and_fixed_runs_finish():
    """Plain ASHA says STOP at max_t, which ends a trial before it writes artefacts; ours says CONTINUE."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    part = _part("smoke", "covid")  # 2 epochs, grace period 1
    sched = build_scheduler(part, "asha")
    sched.set_search_properties("test_acc", "max")
    good = SimpleNamespace(trial_id="good", config={"group": "search"})
    bad = SimpleNamespace(trial_id="bad", config={"group": "search"})
    fixed_bad = SimpleNamespace(trial_id="fixed", config={"group": "fixed"})
    for t in (good, bad, fixed_bad):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, good, {"training_iteration": 1, "test_acc": 0.9}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, bad, {"training_iteration": 1, "test_acc": 0.1}) == TrialScheduler.STOP
    assert sched.on_trial_result(None, fixed_bad, {"training_iteration": 1, "test_acc": 0.1}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, good, {"training_iteration": 2, "test_acc": 0.9}) == TrialScheduler.CONTINUE
    assert type(build_scheduler(part, "none")).__name__ == "InExperimentFIFO"  # Tune's FIFO, trials kept in place


def test_searcher_writes_the_study_to_its_storage(tmp_path):
    """Every ask, report and tell lands in the study folder's SQLite file, where optuna-dashboard reads it."""
    import json

    part = _part("smoke", "covid")
    url = storage_url(tmp_path)
    searcher = build_searcher(part, seed=0, storage=url)
    n = len(part.fixed)
    ids = [f"t{i}" for i in range(n + 3)]
    configs = [searcher.suggest(tid) for tid in ids]
    full, stopped, failed = ids[n:]
    for tid in ids[:n] + [full]:
        for epoch in range(1, part.epochs + 1):
            searcher.on_trial_result(tid, {part.metric: 0.5 + epoch / 10, "epoch": epoch, "training_iteration": epoch})
        searcher.on_trial_complete(tid, {part.metric: 0.7, "training_iteration": part.epochs})
    # Tune gives the result on which ASHA stopped a trial to on_trial_complete alone, not to on_trial_result.
    searcher.on_trial_complete(stopped, {part.metric: 0.9, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_complete(failed, None, error=True)

    study = _study(url, "covid")
    assert study.user_attrs["metric"] == part.metric and study.user_attrs["mode"] == part.mode
    assert study.user_attrs["fixed_runs"] == n
    space = {k: optuna.distributions.json_to_distribution(v) for k, v in json.loads(study.user_attrs["space"]).items()}
    assert space == part.space and list(space) == list(part.space)
    assert study.metric_names == [part.metric]
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == len(ids)
    assert [t.user_attrs["ray_trial_id"] for t in trials] == ids
    assert [t.user_attrs["group"] for t in trials] == ["fixed"] * n + ["search"] * 3
    assert [t.state.name for t in trials] == ["COMPLETE"] * (n + 1) + ["PRUNED", "FAIL"]
    for t, cfg in zip(trials, configs):
        assert t.params == {k: cfg[k] for k in part.space}
    assert all(t.intermediate_values == {1: 0.6, 2: 0.7} for t in trials[: n + 1])
    assert trials[n + 1].intermediate_values == {1: 0.9}


def test_new_searcher_replaces_a_study_left_in_the_storage(tmp_path):
    """A fresh Tune experiment starts a fresh Optuna study: no trials of an attempt Tune never saved."""
    part = _part("smoke", "vae")
    url = storage_url(tmp_path)
    build_searcher(part, seed=0, storage=url).suggest("lost")
    build_searcher(part, seed=0, storage=url)
    assert list(_states(url, "vae").values()) == ["WAITING"] * len(part.fixed)


def test_restored_searcher_keeps_one_optuna_trial_per_ray_trial(tmp_path):
    """After a kill the storage is ahead of Tune's saved searcher: a trial told, a trial asked after the save.

    Tune unpickles the searcher it was built with (tuner.pkl), restores the saved state and resumes the trials
    it knows; the storage must end with one Optuna trial per Ray trial, fixed runs first and in order.
    """
    part = _part("smoke", "covid")
    url = storage_url(tmp_path)
    searcher = build_searcher(part, seed=0, storage=url)
    as_built = pickle.dumps(searcher)  # what Tune keeps in tuner.pkl
    for tid in ("a", "b"):
        searcher.suggest(tid)
    searcher.on_trial_result("a", {part.metric: 0.6, "epoch": 1, "training_iteration": 1})
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's last experiment snapshot before the kill
    searcher.on_trial_result("a", {part.metric: 0.7, "epoch": 2, "training_iteration": 2})
    searcher.on_trial_complete("a", {part.metric: 0.7, "training_iteration": 2})  # told after the snapshot
    lost = searcher.suggest("c")  # asked after the snapshot: Tune will not remember trial c
    del searcher  # the kill

    again = pickle.loads(as_built)
    again.restore(str(tmp_path / "searcher.pkl"))
    # Tune resumes a (from its checkpoint) and b, then asks for new trials.
    again.on_trial_result("a", {part.metric: 0.7, "epoch": 2, "training_iteration": 2})
    again.on_trial_complete("a", {part.metric: 0.7, "training_iteration": 2})
    assert again.suggest("d") == lost  # the forgotten trial's config, not a new trial
    rest = [again.suggest(f"e{i}") for i in range(len(part.fixed) - 3)]
    assert all(cfg["group"] == "fixed" for cfg in rest) and again.suggest("s")["group"] == "search"
    for tid in ("b", "d", *(f"e{i}" for i in range(len(rest))), "s"):
        for epoch in (1, 2):
            again.on_trial_result(tid, {part.metric: 0.5, "epoch": epoch, "training_iteration": epoch})
        again.on_trial_complete(tid, {part.metric: 0.5, "training_iteration": 2})

    trials = _trials(url, "covid")
    rays = ["a", "b", "d", *(f"e{i}" for i in range(len(rest))), "s"]
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(rays)
    assert [t.user_attrs["ray_trial_id"] for t in trials] == rays
    assert [t.user_attrs["group"] for t in trials] == ["fixed"] * len(part.fixed) + ["search"]
    assert trials[0].intermediate_values == {1: 0.6, 2: 0.7} and trials[0].value == 0.7


def test_a_resumed_study_does_not_draw_its_first_values_again(tmp_path):
    """The sampler is reseeded on restore (seed + trials stored), or the next trial would repeat the first draw."""
    part = _part("smoke", "vae")
    url = storage_url(tmp_path)
    searcher = build_searcher(part, seed=0, storage=url)
    as_built = pickle.dumps(searcher)
    configs = [searcher.suggest(f"t{i}") for i in range(len(part.fixed) + 1)]
    searcher.save(str(tmp_path / "searcher.pkl"))
    again = pickle.loads(as_built)
    again.restore(str(tmp_path / "searcher.pkl"))
    resumed = again.suggest("next")
    assert resumed["group"] == "search"
    assert {k: resumed[k] for k in part.space} != {k: configs[-1][k] for k in part.space}
    assert len(_trials(url, "vae")) == len(part.fixed) + 2
