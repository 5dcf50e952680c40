"""The report folder: index.html (offline: figures beside it, no CDN) and report.md built from the same blocks.

`write_report(results, out_dir)` draws every figure into out_dir/figures, then writes both documents. A figure
the study's data cannot give is listed with its reason; a code error raises.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from analysis import covid_runs, describe, discussion, figures_covid, figures_search, figures_vae, vae_runs
from analysis.common import fmt_num
from analysis.results import StudyResults
from trainables.registry import ERROR_TAG, KIND_TAG, PRESET_TAG, STUDY_FILE

# (problem, key, caption, function)
FIGURES = [
    ("covid", "corr_all", "Pearson correlation of daily new cases for every pair of countries.", figures_covid.fig_corr_all),
    ("covid", "corr_top", "The most correlated countries (by mean correlation), clustered.", figures_covid.fig_corr_top),
    ("covid", "cell_curves", "Train/test accuracy and loss per epoch for RNN, LSTM and GRU.", figures_covid.fig_cell_curves),
    ("covid", "acc_vs_L", "Final test accuracy against L per cell, random and time split.", figures_covid.fig_acc_vs_L),
    ("covid", "norm_effect", "Learning curves with and without input normalisation.", figures_covid.fig_norm_effect),
    ("covid", "confusion", "Confusion matrix of the best model on its test split.", figures_covid.fig_confusion),
    ("covid", "world_map", "P(increase) on the next, unlabelled day per country (pygal).", figures_covid.fig_world_map),
    ("covid", "covid_search_history", "Optuna optimisation history of the COVID search.", figures_search.fig_covid_search_history),
    ("covid", "covid_search_importance", "Parameter importances of the COVID search.", figures_search.fig_covid_search_importance),
    ("vae", "vae_elbo", "Negative ELBO per epoch for KL weight 1, 100, 0: nats/image and bits/dim.", figures_vae.fig_vae_elbo),
    ("vae", "vae_terms", "Reconstruction and KL terms per epoch.", figures_vae.fig_vae_terms),
    ("vae", "vae_reconstructions", "Real held-out images and their reconstructions, per KL weight.", figures_vae.fig_vae_reconstructions),
    ("vae", "vae_samples", "Samples from the prior, per KL weight.", figures_vae.fig_vae_samples),
    ("vae", "vae_interpolation", "Interpolation between two real images' latent codes, per KL weight.", figures_vae.fig_vae_interpolation),
    ("vae", "vae_tradeoff", "KL against reconstruction term over all VAE runs.", figures_vae.fig_vae_tradeoff),
    ("vae", "vae_search_history", "Optuna optimisation history of the VAE search.", figures_search.fig_vae_search_history),
    ("vae", "vae_search_importance", "Parameter importances of the VAE search.", figures_search.fig_vae_search_importance),
]


def draw_figures(results: StudyResults, fig_dir: Path) -> dict[str, Path | None]:
    """Every figure of the studied problems; one the study's data cannot give is None, its reason in results.skipped."""
    return {key: fn(results, fig_dir) for problem, key, _caption, fn in FIGURES if results.select(trainable=problem)}


def _fig(figs, key, out_dir, extra: str = ""):
    caption = next(c for _p, k, c, _f in FIGURES if k == key) + (f" {extra}" if extra else "")
    path = figs.get(key)
    if path is None:
        reason = figs.get("__skipped__", {}).get(key)
        return ("p", f"[Figure '{key}' not drawn: {reason}]") if reason else None
    return ("fig", Path(os.path.relpath(path, out_dir)).as_posix(), caption)


def _map_blocks(figs, out_dir) -> list:
    """The map with a caption that counts its grey shapes, and the data's countries that pygal cannot draw."""
    side = out_dir / "figures" / "covid_world_map.json"
    info = json.loads(side.read_text()) if figs.get("world_map") and side.is_file() else {}
    extra = ""
    if "no_data" in info:
        n = info["no_data"]
        extra = (f"{n} {'country' if n == 1 else 'countries'} on the map {'has' if n == 1 else 'have'} no data (grey). "
                 "Hover over a country for its probability and date.")
    b = [_fig(figs, "world_map", out_dir, extra)]
    if info.get("unmapped"):
        b.append(("p", f"Not on pygal's world map (no ISO code or no shape): {', '.join(info['unmapped'])}."))
    return b


def _covid_blocks(results, figs, out_dir) -> list:
    b: list = [("h2", "Problem 1: COVID-19, recurrent classifier of a next-day increase")]
    best = covid_runs.best_sequence_run(results)
    if best is None:
        return b + [("p", "This study has no finished COVID (sequence) runs.")]
    b += [("h3", "Data and preprocessing (from the best run's config)")]
    b += [("list", describe.sequence_preprocessing(best, covid_runs.summary(best)))]
    b += [("h3", "Architecture"), ("p", f"Best run {best.name}: {best.param('cell', '?').upper()}, hidden size "
          f"{best.param('hidden_size')}, {best.param('num_layers')} layer(s), optimiser {best.param('optimizer', 'adam')}, "
          f"lr {best.param('lr')}, batch {best.param('batch_size')}, {best.param('epochs')} epochs.")]
    b.append(("pre", describe.sequence_model(best)))
    b += [("h3", "i. Correlation between countries"), _fig(figs, "corr_all", out_dir), _fig(figs, "corr_top", out_dir)]
    c = covid_runs.set_c(results)
    b.append(("h3", "ii. The set C"))
    if c:
        rows = [["strategy", c["strategy"]], ["threshold", c["threshold"]], ["size", str(c["size"])]]
        rows += [["reference", c["reference"]]] if c.get("reference") else []
        rows += [["min partners", c["min_partners"]]] if c.get("min_partners") else []
        b.append(("table", ["", "value"], rows))
        b.append(("p", "Countries: " + ", ".join(c["countries"]) if c["countries"] else
                  f"The country list was not logged and could not be recomputed: {c.get('error', 'unknown')}"))
    b += [("h3", "iii. Training and test accuracy"), _fig(figs, "cell_curves", out_dir)]
    b += [("h3", "iv. RNN vs LSTM vs GRU, and the sequence length L")]
    rows = covid_runs.acc_vs_L(results)
    if rows:
        b.append(("p", "Test accuracy of the single models (mean over seeds, 95% t-interval) and of their seed "
                       "ensemble (the mean of the seeds' probabilities), each model at its best validation epoch."))
        b.append(("table", ["cell", "L", "seeds", "test acc (random split)", "95% CI ±", "ensemble", "majority rate",
                            "test acc (time split)", "95% CI ±", "ensemble (time)", "majority rate (time)"],
                  [[r.cell.upper(), str(r.seq_len), str(r.n or r.n_time), fmt_num(r.acc_random), fmt_num(r.ci_random),
                    fmt_num(r.ens_random), fmt_num(r.majority_random), fmt_num(r.acc_time), fmt_num(r.ci_time),
                    fmt_num(r.ens_time), fmt_num(r.majority_time)]
                   for r in rows]))
    b += _baseline_table(results)
    b += [_fig(figs, "acc_vs_L", out_dir), _fig(figs, "norm_effect", out_dir)]
    b += [("h3", "Best model"), _fig(figs, "confusion", out_dir)]
    b += [("h3", "v. Probability of an increase, world map")] + _map_blocks(figs, out_dir)
    b += [("h3", "Hyperparameter search (Optuna)"), _fig(figs, "covid_search_history", out_dir),
          _fig(figs, "covid_search_importance", out_dir)]
    b += [("h3", "vi. Discussion")] + [("p", p) for p in discussion.covid_discussion(results)]
    return b


def _vae_blocks(results, figs, out_dir) -> list:
    b: list = [("h2", "Problem 2: variational autoencoder on anime faces")]
    runs = vae_runs.by_weight(results)
    ref = runs.get(1.0) or next(iter(runs.values()), None) or (results.select(trainable="vae") or [None])[0]
    if ref is None:
        return b + [("p", "This study has no finished VAE runs.")]
    b += [("h3", "i. Preprocessing and architecture (from the KL x1 run's config)"), ("list", describe.vae_preprocessing(ref))]
    b.append(("pre", describe.vae_model(ref)))
    choice = discussion.vae_choice(results)
    b += [("h3", "How the runs are chosen and scored"), ("p", choice)] if choice else []
    b += [("h3", "ii. Learning curves (vi: KL x100, vii: KL x0 on the same axes)"), _fig(figs, "vae_elbo", out_dir),
          _fig(figs, "vae_terms", out_dir)]
    b += _iw_blocks(runs)
    b += [("h3", "iii. Reconstructions"), _fig(figs, "vae_reconstructions", out_dir)]
    b += [("h3", "iv. Samples from the prior"), _fig(figs, "vae_samples", out_dir)]
    b += [("h3", "v. Interpolation in latent space"), _fig(figs, "vae_interpolation", out_dir)]
    b += [("h3", "KL / reconstruction trade-off and the search"), _fig(figs, "vae_tradeoff", out_dir),
          _fig(figs, "vae_search_history", out_dir), _fig(figs, "vae_search_importance", out_dir)]
    b += [("h3", "viii. Discussion: the effect of the KL term")] + [("p", p) for p in discussion.vae_discussion(results)]
    return b


def _baseline_table(results) -> list:
    """Test accuracy of every baseline at each L of the table above, on the same windows and splits."""
    by_l = covid_runs.baselines_by_L(results)
    if not by_l:
        return []
    names = ["majority", "weekly", "logistic", "boosted_trees"]
    rows = [[str(L), split] + [fmt_num(accs.get(n)) if n in accs else "-" for n in names]
            for L, by_split in sorted(by_l.items()) for split, accs in by_split.items() if accs]
    return [("p", "Baselines on the same windows and splits (test accuracy; the weekly rule needs L >= 7): the "
                  "majority class of the training part, the weekly rule, logistic regression and gradient-boosted "
                  "trees on the window relative to its last day, the last day's level and the weekday."),
            ("table", ["L", "split", "majority class", "weekly rule", "logistic regression", "gradient-boosted trees"],
             rows)]


def _iw_blocks(runs: dict) -> list:
    """Per KL weight: the held-out negative ELBO beside the importance-weighted estimate of -log p(x)."""
    rows = []
    for w, r in runs.items():
        iw = vae_runs.iw_results(r)
        if iw is None:
            continue
        gap = iw.get("test_iw_neg_elbo", float("nan")) - iw["test_iw_nll"]
        n = iw.get("iw_images") or iw.get("n_test")
        rows.append([vae_runs.weight_label(w), fmt_num(r.metrics.get("test_neg_elbo"), 1),
                     fmt_num(iw.get("test_iw_neg_elbo"), 1), fmt_num(iw["test_iw_nll"], 1), fmt_num(gap, 1),
                     fmt_num(r.metrics.get("test_bits_per_dim"), 4), fmt_num(iw.get("test_iw_bits_per_dim"), 4),
                     str(int(iw["iw_samples"])) if "iw_samples" in iw else "?", str(int(n)) if n else "?"])
    if not rows:
        return []
    lik = next(iter(runs.values())).param("likelihood", "bernoulli")
    note = ("Bernoulli likelihood on intensities: these nats and bits/dim compare between Bernoulli runs only."
            if lik == "bernoulli" else "Gaussian likelihood: bits/dim on the 8-bit scale.")
    return [("h3", "Log-likelihood: ELBO and the importance-weighted bound"),
            ("p", "Held-out negative ELBO (one sample, closed-form KL) and, at the end of each run, -log p(x) estimated "
                  "with k importance samples of q(z|x) (IWAE) beside the negative ELBO of the same k samples; "
                  "IWAE <= ELBO, and the gap is a lower bound on KL(q(z|x) || p(z|x)). " + note),
            ("table", ["run", "-ELBO (nats/image)", "-ELBO, same k samples", "IWAE -log p(x)", "gap (nats)",
                       "-ELBO bits/dim", "IWAE bits/dim", "k", "test images"], rows)]


def build_blocks(results: StudyResults, figs: dict, out_dir: Path) -> list:
    counts = Counter((r.trainable, r.group) for r in results.runs)
    b: list = [("h1", f"Study report: {results.name}")]
    b.append(("p", f"Kind {results.parent_tags.get(KIND_TAG, '?')}, preset {results.parent_tags.get(PRESET_TAG, '?')}; "
              f"{len(results.runs)} finished runs (" + ", ".join(f"{n} {t}/{g}" if g else f"{n} {t}" for (t, g), n in sorted(counts.items()))
              + f"), {len(results.failed)} not finished. Tracking store: {results.tracking_uri}. "
              f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}."))
    if results.failed:
        b.append(("list", [f"{r.name} ({r.trainable}/{r.group}): {r.status}" + (f", {r.tags[ERROR_TAG]}" if r.tags.get(ERROR_TAG) else "")
                           for r in results.failed]))
    b += _covid_blocks(results, figs, out_dir) + _vae_blocks(results, figs, out_dir)
    study_file = Path(results.study_dir or "", STUDY_FILE)
    if results.study_dir and study_file.is_file():  # what it searched, its constants and fixed runs
        b += [("h2", "The study as run"), ("p", f"The study file it ran with ({STUDY_FILE}):"),
              ("pre", study_file.read_text())]
    if results.skipped:
        b += [("h2", "Figures not drawn"), ("list", [f"{k}: {v}" for k, v in results.skipped.items()])]
    return [x for x in b if x is not None]


STATUS_JS = """(function(){var errs=[];window.addEventListener('error',function(e){var t=e.target;
errs.push(t&&t.getAttribute?('load '+(t.getAttribute('src')||t.getAttribute('data'))):String(e.message));},true);
document.addEventListener('load',function(e){var t=e.target;if(t&&t.tagName==='OBJECT'){t.setAttribute('data-loaded','1');}},true);
window.addEventListener('load',function(){var imgs=[].slice.call(document.images);
var objs=[].slice.call(document.getElementsByTagName('object'));
var bad=imgs.filter(function(i){return !i.complete||i.naturalWidth===0;}).map(function(i){return i.getAttribute('src');});
bad=bad.concat(objs.filter(function(o){return o.getAttribute('data-loaded')!=='1';}).map(function(o){return o.getAttribute('data');}));
var el=document.getElementById('load-status');el.setAttribute('data-images',String(imgs.length));
el.setAttribute('data-objects',String(objs.length));
el.setAttribute('data-broken',bad.join(' '));el.setAttribute('data-errors',errs.join(' | '));el.setAttribute('data-done','1');});})();"""
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}"
       "img,object{max-width:100%;height:auto;border:1px solid #ddd}object{width:100%;display:block}figure{margin:1.2em 0}figcaption{color:#555;font-size:.9em}"
       "table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
       "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.8em}h2{border-bottom:2px solid #444;margin-top:2em}")


def _svg_aspect(out_dir: Path, rel: str) -> str | None:
    """'W/H' from the SVG's viewBox: an <object> has no intrinsic size from a viewBox-only SVG in every browser."""
    try:
        with open(Path(out_dir) / rel, encoding="utf-8") as f:
            head = f.read(4000)
    except OSError:
        return None
    m = re.search(r'viewBox="[-\d.]+ [-\d.]+ ([\d.]+) ([\d.]+)"', head)
    return f"{m.group(1)}/{m.group(2)}" if m else None


def to_html(blocks: list, title: str, out_dir: Path | None = None) -> str:
    e = html.escape
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
           f"<style>{CSS}</style><script>{STATUS_JS}</script></head><body>"]
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3", "p"):
            out.append(f"<{kind}>{e(blk[1])}</{kind}>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "pre":
            out.append(f"<pre>{e(blk[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in blk[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in blk[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "fig":
            src, cap = e(blk[1]), e(blk[2])
            if src.endswith(".svg"):  # an <img> SVG is a picture; an <object> is a document, so hover titles work
                ratio = _svg_aspect(out_dir, blk[1]) if out_dir else None
                style = f" style='aspect-ratio:{ratio}'" if ratio else ""
                out.append(f"<figure><object data='{src}' type='image/svg+xml' aria-label='{cap}'{style}>"
                           f"<a href='{src}'>{cap}</a></object>"
                           f"<figcaption>{cap} <a href='{src}'>open the SVG</a></figcaption></figure>")
            else:
                out.append(f"<figure><img src='{src}' alt='{cap}'><figcaption>{cap}</figcaption></figure>")
    out.append("<p id='load-status' hidden></p></body></html>")
    return "\n".join(out)


_MD_PUNCT = re.compile(r"[\\`*\[\]|~$#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MD_BLOCK_START = re.compile(r"^([-+=]|\d{1,9}[.)])(?=\s|$)")


def md_text(text) -> str:
    """Plain text -> Markdown that renders as exactly that text, on one line: `<`, `>`, `&` become entities (no raw
    HTML from a study or country name), Markdown punctuation is backslash-escaped where it could start emphasis,
    code, a link, a table cell or strikethrough (an underscore inside a word cannot, so test_acc stays readable),
    and a leading list, heading or setext marker is escaped."""
    t = " ".join(str(text).split())  # a newline would end a table row, a list item or a heading
    t = _MD_PUNCT.sub(lambda m: "\\" + m.group(0), t)
    t = html.escape(t, quote=False)
    return _MD_BLOCK_START.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], t)


def to_markdown(blocks: list) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + md_text(blk[1]))
        elif kind == "p":
            out.append(md_text(blk[1]))
        elif kind == "list":
            out.append("\n".join(f"- {md_text(i)}" for i in blk[1]))
        elif kind == "pre":  # a fence longer than any backtick run inside, so the text cannot close it early
            fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", blk[1])), default=0) + 1)
            out.append(f"{fence}\n{blk[1]}\n{fence}")
        elif kind == "table":
            rows = [[md_text(h) for h in blk[1]], ["---"] * len(blk[1])] + [[md_text(c) for c in r] for r in blk[2]]
            out.append("\n".join("| " + " | ".join(r) + " |" for r in rows))
        elif kind == "fig":
            out.append(f"![{md_text(blk[2])}]({quote(blk[1])})\n\n*{md_text(blk[2])}*")
    return "\n\n".join(out) + "\n"


def _write(path: Path, text: str) -> None:
    """Temp file + rename: a reader never sees half a report. The temp file is made by a plain open(), so it has
    the mode a report is shared with (0666 less the umask, like the figures), not tempfile's private 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(results: StudyResults, out_dir) -> Path:
    """Draw the figures and write index.html + report.md into out_dir; returns the index.html path."""
    out = Path(out_dir).resolve()
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = draw_figures(results, fig_dir)
    figs["__skipped__"] = results.skipped  # type: ignore[assignment]
    blocks = build_blocks(results, figs, out)
    _write(out / "report.md", to_markdown(blocks))
    index = out / "index.html"
    _write(index, to_html(blocks, f"Study report: {results.name}", out))
    return index
