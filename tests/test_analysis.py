"""analysis/: read a real MLflow store in the study layout, draw every figure, write and render the report."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from analysis import covid_runs, describe, discussion, figures_covid, figures_search, figures_vae, section_covid, vae_runs
from analysis.report import FIGURES, to_markdown, write_report
from analysis.results import load_study
from analysis_fixture import FixtureKnobs, build_store
from trainables.names import STUDY_FILE

CHROMIUM = Path("/usr/bin/chromium")
DATA_FIGURES = {"corr_all", "corr_top"}  # need the CSV: covered by the integration tests
HOSTILE = "<script>alert(1)</script> | x"


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
    seq = results.select(trainable="covid")
    assert len(seq) == 18 and len(results.select(trainable="vae")) == 9  # 9 fixed + 1 ablation + 8 search
    assert len(results.select(trainable="baseline")) == 4 * 2 * 3  # 4 baselines x 2 splits x 3 L
    assert [r.name for r in results.failed] == ["search_failed"]
    run = results.select(trainable="covid", group="fixed", cell="gru", seq_len=20)[0]
    steps, values = run.history["test_acc"]
    assert list(steps) == list(range(1, 9)) and values[-1] == pytest.approx(run.metrics["test_acc"])
    assert {"summary.json", "confusion.json", "predictions.json"} <= set(run.artifacts)
    assert run.param("data_dir") is None  # logged as JSON null
    # a key the run did not log is the trainable's default (study/ logs only the config it passed)
    assert "optimizer" not in run.logged_params and run.params["optimizer"] == "adam"
    assert len(results.table()) == 18 + 9 + 24  # sequence, vae and baseline runs (the failed one left out)


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


def test_heatmap_legend_says_what_grey_cells_mean():
    rng = np.random.default_rng(2)
    corr = np.corrcoef(rng.normal(size=(12, 40)))
    names = [f"C{i}" for i in range(12)]
    fig = figures_covid.draw_corr_heatmap(corr, names, "no undefined cells")
    assert fig.axes[0].get_legend() is None  # nothing grey, nothing to explain
    figures_covid.plt.close(fig)
    corr[3, :] = corr[:, 3] = np.nan  # a country with zero variance in the date range
    fig = figures_covid.draw_corr_heatmap(corr, names, "one undefined country", zoom=True)
    legend = fig.axes[0].get_legend()
    assert legend is not None
    text = legend.get_texts()[0].get_text()
    assert "undefined" in text and "no variance" in text and "1 country" in text
    patch = legend.get_patches()[0]
    assert patch.get_facecolor()[:3] == pytest.approx(figures_covid.plt.matplotlib.colors.to_rgb(figures_covid.UNDEFINED_GREY))
    figures_covid.plt.close(fig)


def test_missing_runs_skip_with_a_reason(results, tmp_path):
    results.runs = [r for r in results.runs if r.trainable == "covid" and r.group == "search"]
    assert figures_vae.fig_vae_elbo(results, tmp_path) is None
    assert figures_covid.fig_norm_effect(results, tmp_path) is None
    assert "vae_elbo" in results.skipped and "norm_effect" in results.skipped
    results.runs = results.runs[:1]  # one trial: nothing for fANOVA to explain
    assert figures_search.fig_covid_search_importance(results, tmp_path) is None
    assert "differ in a searched parameter" in results.skipped["covid_search_importance"]


def test_a_code_error_raises_instead_of_becoming_a_missing_figure(results, tmp_path, monkeypatch):
    def broken(results, out_dir):
        raise KeyError("a bug, not the study's data")

    monkeypatch.setattr(section_covid, "FIGURES", [(*FIGURES[0][:3], broken)])
    with pytest.raises(KeyError, match="a bug"):
        write_report(results, tmp_path / "report")


def test_covid_architecture_from_the_params(results):
    """The model class rebuilt from the run's config: the input width is what its `features` setting gives."""
    run = results.select(trainable="covid", group="search", features="relative+weekday")[0]
    text = describe.sequence_model(run)
    assert text.startswith("StackedClassifier(") and text.endswith(" trainable parameters")
    assert f"1 x {run.param('cell').upper()}(input 9, hidden {run.param('hidden_size')}, 2 layers)" in text


def test_the_study_file_is_shown_escaped(results, tmp_path):
    (tmp_path / STUDY_FILE).write_text(f"# {HOSTILE}\n[[part]]\ntrainable = \"covid\"\n")
    results.study_dir = str(tmp_path)
    html = write_report(results, tmp_path / "report").read_text()
    section = html.split("<h2>The study as run</h2>", 1)[1]
    assert "<pre># &lt;script&gt;alert(1)&lt;/script&gt; | x\n[[part]]" in section and "<script>alert" not in html


def test_search_distributions_are_the_logged_ones_else_follow_the_values(results):
    dists = figures_search.logged_space(results, "vae")  # the study's own Optuna distributions, from the parent run
    assert dists["kl_weight"].choices[-1] == 100.0 and dists["lr"].log and dists["lr"].low == 1e-5
    inferred = figures_search.infer_distributions(figures_search.search_trials(results, "vae"))
    assert type(inferred["kl_weight"]).__name__ == "CategoricalDistribution"  # repeated float levels
    imp = figures_search.param_importances(results, "covid")
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


def test_report_files_get_the_mode_of_a_plain_write(results, tmp_path):
    """index.html and report.md are shared like the figures: 0666 less the umask, not a temp file's 0600."""
    import os
    import stat

    for umask, want in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            out = tmp_path / f"report-{umask:o}"
            write_report(results, out)
        finally:
            os.umask(old)
        for name in ("index.html", "report.md", "figures/vae_elbo.png"):
            assert stat.S_IMODE((out / name).stat().st_mode) == want, (name, oct(umask))


def test_markdown_escapes_names_from_the_store(tmp_path):
    """A study name or a country name is text in report.md, never HTML or Markdown structure."""
    uri = build_store(tmp_path / "store", name=HOSTILE, knobs=FixtureKnobs(extra_country=HOSTILE.replace("x", "y")))
    res = load_study(uri, HOSTILE)
    res.data_dir = str(tmp_path / "no-data-here")
    write_report(res, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "index.html").read_text()
    assert "<script" not in md and "<script>alert" not in html
    assert md.startswith("# Study report: &lt;script&gt;alert(1)&lt;/script&gt; \\| x\n")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\| y" in md  # set C and the countries not on the map
    # a table cell keeps its column: the pipe inside a name is escaped
    table = to_markdown([("table", ["name", "value"], [[HOSTILE, "1"], ["a_b *c* [d](e)", "2"]])])
    for line in table.strip().splitlines():
        assert len(re.split(r"(?<!\\)\|", line)) == 4, line
    assert "a_b \\*c\\* \\[d\\](e)" in table


def test_accuracy_tables_carry_the_baselines_and_majority_rates(results, tmp_path):
    write_report(results, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    for L in (10, 20, 30):  # the fixture's baselines: majority 0.60, weekly 0.66, logistic 0.71, trees 0.74
        assert f"| {L} | random | 0.600 | 0.660 | 0.710 | 0.740 |" in md
        assert f"| {L} | time | 0.550 | 0.610 | 0.660 | 0.690 |" in md
    assert "| majority rate | test acc (time split) |" in md and "| 0.600 |" in md


def test_a_time_split_study_names_its_split_once_and_counts_its_seeds(tmp_path):
    """Trials on the time split have no random-split twin: no random columns filled, the seeds counted anyway."""
    results = _load(tmp_path / "store", FixtureKnobs(split="time"))
    write_report(results, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    rows = [line for line in md.splitlines() if re.match(r"\| (RNN|LSTM|GRU) \| \d+ \|", line)]
    assert rows and all(line.split(" | ")[2:6] == ["2", "n/a", "n/a", "n/a"] for line in rows), rows
    assert figures_covid.fig_acc_vs_L(results, tmp_path / "fig").exists()
    fig = plt.imread(tmp_path / "fig" / "covid_acc_vs_L.png")
    assert fig.shape[1] < 1.6 * fig.shape[0]  # one panel (the time split's), not an empty random one beside it
    chosen = discussion.covid_discussion(results)[0]
    assert "95% CI over 2 seeds) on the time split." in chosen
    assert "random" not in chosen and "on the time split and" not in chosen


def test_two_trials_at_one_cell_and_L_give_the_one_chosen_on_validation(tmp_path):
    """Each trial has its seeds inside: an interval across two configs would be neither's seed spread."""
    plain = {r.seq_len: r for r in covid_runs.acc_vs_L(_load(tmp_path / "a")) if r.cell == "gru"}
    both = {r.seq_len: r for r in covid_runs.acc_vs_L(_load(tmp_path / "b", FixtureKnobs(second_gru_20=True)))
            if r.cell == "gru"}
    assert both[20].n == 2 and abs(both[20].acc_random - plain[20].acc_random) < 0.02  # not pulled to ~0.56
    assert both[20].acc_random > 0.7
    # the normalisation comparison takes only runs equal in every other setting: not the hidden-64 trial
    by_norm, label = covid_runs.norm_pairs(_load(tmp_path / "c", FixtureKnobs(second_gru_20=True)))
    assert label == "gru, L=20, split=random" and sorted(by_norm) == ["log1p", "none"]
    assert [r.params["hidden_size"] for r in by_norm["log1p"]] == ["32"]


def test_vae_preprocessing_gives_the_reasons_from_the_params(results):
    run = vae_runs.by_weight(results)[1.0]  # conv, 16x16, Bernoulli, latent 32
    text = " ".join(describe.vae_preprocessing(run))
    for words in ("Why 16x16", "No crop", "face crops", "x/255 in [0,1]", "Bernoulli", "'conv'", "4x4, stride 2",
                  "(16 -> 4)", "Decoder: the encoder mirrored", "Latent size 32", "kl_weight=1", "exactly the negative ELBO"):
        assert words in text, words
    run.params.update(arch="mlp", image_size="64", likelihood="gaussian", kl_weight="0.0", latent_dim="16")
    text = " ".join(describe.vae_preprocessing(run))
    for words in ("Why 64x64", "'mlp'", "Gaussian", "8-bit scale", "Latent size 16", "weight 0 drops the prior term"):
        assert words in text, words
    assert "Bernoulli" not in text and "'conv'" not in text


def test_vae_discussion_says_what_prior_samples_look_like(tmp_path):
    """Words from measured image statistics: KL x1 face-like, x100 one average face, x0 noise without face
    structure; when the x0 samples do have a face layout (a knob), the words change with the numbers."""
    def paragraph(paras, start):
        return next(p for p in paras if p.startswith(start))

    a = discussion.vae_discussion(_load(tmp_path / "a"))
    b = discussion.vae_discussion(_load(tmp_path / "b", FixtureKnobs(kl0_samples="faces")))
    assert "prior samples of the KL x1 model are face-like" in a[0]
    assert "prior samples are nearly one image: an average face" in paragraph(a, "KL x100")
    x0a, x0b = paragraph(a, "KL x0"), paragraph(b, "KL x0")
    assert "little face structure" in x0a and "noisier than real faces" in x0a
    assert "correlation with the mean real face" in x0a  # the numbers the words were decided from
    assert "face-like" in x0b and "little face structure" not in x0b


def test_importance_weighted_bound_in_the_report(results, tmp_path):
    write_report(results, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "IWAE -log p(x)" in md
    for w, run in vae_runs.by_weight(results).items():
        iw = vae_runs.iw_results(run)
        gap = iw["test_iw_neg_elbo"] - iw["test_iw_nll"]
        row = (f"| {vae_runs.weight_label(w)} | {run.metrics['test_neg_elbo']:.1f} | {iw['test_iw_neg_elbo']:.1f} | "
               f"{iw['test_iw_nll']:.1f} | {gap:.1f} | ")
        assert row in md, row
        assert "| 64 | 200 |" in md
    para = next(p for p in discussion.vae_discussion(results) if p.startswith("Importance weighting"))
    assert "k=64" in para and "lower bound on the mean KL(q(z|x) || p(z|x))" in para and "It is largest for" in para


def test_world_map_tooltips_work_offline(results, tmp_path):
    import xml.etree.ElementTree as ET

    from pygal_maps_world.maps import World

    from analysis import covid_runs

    svg = figures_covid.fig_world_map(results, tmp_path / "figures").read_text()
    pred = json.loads(covid_runs.best_sequence_run(results, need="predictions.json").artifacts["predictions.json"].read_text())
    p_de = pred["countries"]["Germany"]["p_increase"]
    ns = "{http://www.w3.org/2000/svg}"
    groups = {g.get("class").split()[0]: g for g in ET.fromstring(svg).iter(f"{ns}g")
              if "country" in (g.get("class") or "").split()}
    assert len(groups) == len(World.area_names)
    title = groups["de"].find(f"{ns}title")
    assert title is not None and title.text == f"Germany: {round(100 * p_de)}% chance of a rise on 2023-03-10"
    assert groups["aq"].find(f"{ns}title").text == "Antarctica: no data"
    urls = set(re.findall(r"https?://[^\s\"'<>]+", svg))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # no CDN, no remote script: works offline
    assert "<script" not in svg
    bins, _ = figures_covid.world_map_values(pred["countries"])
    no_data = len(World.area_names) - sum(len(b) for b in bins)
    write_report(results, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "index.html").read_text()
    assert f"{no_data} countries on the map have no data (grey)" in md
    assert "<object data='figures/covid_world_map.svg' type='image/svg+xml'" in html  # hover needs a document


def test_discussion_follows_the_numbers(tmp_path):
    a = _load(tmp_path / "a")
    b = _load(tmp_path / "b", FixtureKnobs(best_L={"rnn": 30, "lstm": 10, "gru": 10}, time_gap=0.0, kl100_recon=900.0,
                                           baseline_shift=0.2))
    da, db = discussion.covid_discussion(a), discussion.covid_discussion(b)

    def para(paras, start):
        return next(p for p in paras if p.startswith(start))

    # the chosen model: on validation, its test numbers with the seed interval, beside the baselines
    assert da[0].startswith("Chosen on val_acc") and "95% CI over 2 seeds" in da[0]
    assert "gradient-boosted trees 0.740" in da[0] and "points above the best of them" in da[0]
    assert "gradient-boosted trees 0.940" in db[0] and "points below the best of them" in db[0]
    # L is judged above each L's majority rate
    assert "RNN gains most above it at L=10" in para(da, "The majority-class rate")
    assert "RNN gains most above it at L=30" in para(db, "The majority-class rate")
    gain_a, gain_b = para(da, "Against the baselines"), para(db, "Against the baselines")
    assert "on the random split 6 of 9 cell/L settings beat" in gain_a
    assert "on the random split 0 of 9 cell/L settings beat" in gain_b
    assert para(da, "The search ran 18 trials (fixed runs included) on val_acc")
    assert "'relative+weekday' best" in para(da, "Validation accuracy by input features")
    assert "lower on average" in para(da, "The leakage-free time split") and "hardly differs" in para(db, "The leakage-free")
    assert "None of the 18 models behind the accuracy-vs-L table predicts a single class" in " ".join(da)
    # epoch cost compared over runs that differ only in the cell (the grid at each L): the fixture's 0.4/0.9/0.7 s
    assert re.search(r"the RNN was cheapest \(0\.[34]\d s vs LSTM 0\.[89]\d s, GRU 0\.[67]\d s\)", " ".join(da))
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
    assert int(attrs["data-objects"]) == 1  # the world map: an <object>, so its hover titles work
    assert int(attrs["data-images"]) + int(attrs["data-objects"]) == len(FIGURES) - len(DATA_FIGURES)
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
    best = max(results.select(trainable="covid"), key=lambda r: r.metrics["test_acc"])
    best.artifacts["predictions.json"] = tmp_path / "predictions.json"  # leave the shared store as it is
    best.artifacts["predictions.json"].write_text(json.dumps({"date": "2023-03-10", "countries": preds}))
    svg = figures_covid.fig_world_map(results, tmp_path).read_text()
    bins, unmapped = figures_covid.world_map_values(preds)
    mapped = [c for b in bins for c in b]
    assert len(mapped) >= 170 and len(unmapped) <= 30
    for code in mapped:
        assert re.search(rf'class="{code} country map-element color-\d', svg), code
    assert "2023-03-10" in svg and svg.count('class="legend') >= 5
