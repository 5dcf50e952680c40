"""analysis/: read a real MLflow store in the study layout, draw every figure, write and render the report."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis import discussion, figures_covid, figures_search, figures_vae
from analysis.report import FIGURES, write_report
from analysis.results import load_study
from analysis_fixture import FixtureKnobs, build_store

CHROMIUM = Path("/usr/bin/chromium")
DATA_FIGURES = {"corr_all", "corr_top"}  # need the CSV: covered by the integration tests


def _load(root: Path, knobs: FixtureKnobs | None = None):
    uri = build_store(root, knobs=knobs)
    results = load_study(uri)
    results.data_dir = str(root / "no-data-here")  # unit tests must not depend on STUDY_DATA_DIR
    return results


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    build_store(root)
    return root


@pytest.fixture()
def results(store):
    res = load_study(f"sqlite:///{store / 'mlflow.db'}")
    res.data_dir = str(store / "no-data-here")
    return res


def test_load_study_reads_runs_histories_and_artefacts(results):
    assert results.name == "homework-test"
    assert results.parent_tags["study.kind"] == "homework"
    seq = results.select(trainable="sequence")
    assert len(seq) == 28 and len(results.select(trainable="vae")) == 9
    assert [r.name for r in results.failed] == ["search_failed"]
    run = results.select(trainable="sequence", group="fixed", cell="gru", seq_len=20)[0]
    steps, values = run.history["test_acc"]
    assert list(steps) == list(range(1, 9)) and values[-1] == pytest.approx(run.metrics["test_acc"])
    assert {"summary.json", "confusion.json", "predictions.json"} <= set(run.artifacts)
    assert run.param("data_dir") is None  # logged as JSON null
    # a key the run did not log is the trainable's default (study/ logs only the config it passed)
    assert "optimizer" not in run.logged_params and run.params["optimizer"] == "adam"
    assert len(results.table()) == 37


@pytest.mark.parametrize("key", [k for _p, k, _c, _f in FIGURES if k not in DATA_FIGURES])
def test_every_figure_is_a_non_empty_file(results, tmp_path, key):
    fn = next(f for _p, k, _c, f in FIGURES if k == key)
    path = fn(results, tmp_path)
    assert path is not None, results.skipped
    assert path.is_file() and path.stat().st_size > 2000


def test_correlation_figures_from_a_matrix(results, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 80))
    x[:20] += rng.normal(size=80) * 3  # a block of co-moving countries
    corr = np.corrcoef(x)
    corr[7, :] = corr[:, 7] = np.nan  # a zero-variance country
    names = [f"Country {i}" for i in range(50)]
    all_ = figures_covid.fig_corr_all(results, tmp_path, corr=corr, names=names)
    top = figures_covid.fig_corr_top(results, tmp_path, corr=corr, names=names, n=15)
    assert all_.stat().st_size > 2000 and top.stat().st_size > 2000
    picked = set(figures_covid.top_correlated(corr, 15))
    assert len(picked) == 15 and picked <= set(range(20)) and 7 not in picked


def test_missing_runs_skip_with_a_reason(results, tmp_path):
    results.runs = [r for r in results.runs if r.trainable == "sequence" and r.group == "search"]
    assert figures_vae.fig_vae_elbo(results, tmp_path) is None
    assert figures_covid.fig_norm_effect(results, tmp_path) is None
    assert "vae_elbo" in results.skipped and "norm_effect" in results.skipped


def test_search_distributions_follow_the_logged_values(results):
    space = figures_search.logged_space(results, "vae")
    assert space is not None  # the study's own space, read from the parent run
    dists = figures_search.infer_distributions(figures_search.search_trials(results, "vae"), space)
    assert type(dists["kl_weight"]).__name__ == "CategoricalDistribution"
    assert type(dists["lr"]).__name__ == "FloatDistribution" and dists["lr"].log
    imp = figures_search.param_importances(results, "sequence")
    # fixed runs are trials of the Optuna study too, so L and norm (varied by them) get an importance as well
    assert set(imp) == {"cell", "seq_len", "hidden_size", "lr", "norm"} and sum(imp.values()) == pytest.approx(1.0)


def test_write_report_references_every_figure(results, tmp_path):
    index = write_report(results, tmp_path / "report")
    html = index.read_text()
    md = (tmp_path / "report" / "report.md").read_text()
    figs = sorted((tmp_path / "report" / "figures").glob("*.png")) + [tmp_path / "report" / "figures" / "covid_world_map.svg"]
    assert len(figs) == len(FIGURES) - len(DATA_FIGURES)
    for f in figs:
        assert f"figures/{f.name}" in html and f"figures/{f.name}" in md
    assert set(results.skipped) == DATA_FIGURES  # and the report says why
    assert "not drawn" in md and "Problem 1" in md and "Problem 2" in md
    assert not re.search(r"""(src|href|data)=['"](https?:)?//""", html), "offline: no CDN or remote resource"
    assert "<script src" not in html and "<link" not in html


def test_discussion_follows_the_numbers(tmp_path):
    a = _load(tmp_path / "a")
    b = _load(tmp_path / "b", FixtureKnobs(best_L={"rnn": 30, "lstm": 10, "gru": 10}, time_gap=0.0, kl100_recon=900.0))
    da, db = discussion.covid_discussion(a), discussion.covid_discussion(b)
    assert "RNN did best at L=10" in da[0] and "RNN did best at L=30" in db[0]
    assert "lower on average" in da[1] and "hardly differs" in db[1]
    va, vb = discussion.vae_discussion(a), discussion.vae_discussion(b)
    ka = next(p for p in va if p.startswith("KL x100"))
    kb = next(p for p in vb if p.startswith("KL x100"))
    assert "reconstruction term 521.1" in ka and "reconstruction term 901.1" in kb


def test_study_report_command(store, tmp_path):
    from study.cli import main

    storage = tmp_path / "studies"
    (storage / "homework-test").mkdir(parents=True)
    shutil.copy(store / "mlflow.db", storage / "homework-test" / "mlflow.db")
    assert main(["report", "--storage", str(storage), "--data-dir", str(tmp_path / "none")]) == 0
    assert (storage / "homework-test" / "report" / "index.html").is_file()
    out = tmp_path / "out"
    assert main(["report", "--mlflow-uri", f"sqlite:///{store / 'mlflow.db'}", "--name", "homework-test",
                 "--out", str(out)]) == 0
    assert (out / "report.md").is_file()
    assert main(["report", "--storage", str(storage), "--name", "nope"]) == 2
    assert main(["report", "--mlflow-uri", f"sqlite:///{store / 'mlflow.db'}"]) == 2  # no --out


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chrome-profile'}", "--virtual-time-budget=5000"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium")
def test_report_renders_in_headless_chromium(results, tmp_path):
    index = write_report(results, tmp_path / "report")
    url = index.as_uri()
    dom = _chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    status = re.search(r'<p id="load-status"[^>]*>', dom.stdout)
    assert status, dom.stdout[-2000:]
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', status.group(0)))
    assert attrs["data-done"] == "1"
    assert int(attrs["data-images"]) == len(FIGURES) - len(DATA_FIGURES)
    assert attrs["data-broken"] == "" and attrs["data-errors"] == ""
    assert not [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    shot = tmp_path / "report.png"
    res = _chromium(["--window-size=1200,3000", f"--screenshot={shot}", url], tmp_path)
    assert res.returncode == 0 and shot.is_file()
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        assert np.asarray(im.convert("L")).std() > 10  # not a blank page


@pytest.mark.integration
def test_correlation_figures_from_the_real_csv(results, real_data_dir, tmp_path):
    results.data_dir = str(real_data_dir)
    all_ = figures_covid.fig_corr_all(results, tmp_path)
    top = figures_covid.fig_corr_top(results, tmp_path)
    assert all_ is not None and top is not None, results.skipped
    assert all_.stat().st_size > 20_000 and top.stat().st_size > 20_000


@pytest.mark.integration
def test_world_map_colours_every_mapped_country(results, real_data_dir, tmp_path):
    from data.countries import iso2_codes
    from data.covid import load_confirmed

    names = load_confirmed(real_data_dir / "covid" / "time_series_covid19_confirmed_global.csv").countries
    iso, _ = iso2_codes(real_data_dir / "covid" / "UID_ISO_FIPS_LookUp_Table.csv", names)
    rng = np.random.default_rng(0)
    preds = {n: {"iso2": iso.get(n), "p_increase": float(rng.uniform())} for n in names}
    best = max(results.select(trainable="sequence"), key=lambda r: r.metrics["test_acc"])
    best.artifacts["predictions.json"] = tmp_path / "predictions.json"  # leave the shared store as it is
    best.artifacts["predictions.json"].write_text(json.dumps({"date": "2023-03-10", "countries": preds}))
    svg = figures_covid.fig_world_map(results, tmp_path).read_text()
    bins, unmapped = figures_covid.world_map_values(preds)
    mapped = [c for b in bins for c in b]
    assert len(mapped) >= 170 and len(unmapped) <= 30
    for code in mapped:
        assert re.search(rf'class="{code} country map-element color-\d', svg), code
    assert "2023-03-10" in svg and svg.count('class="legend') >= 5
