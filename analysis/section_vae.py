"""The VAE part's report section (homework problem 2): the built-in `vae` trainable's `report_section`.

`section(results, part, fig_dir, out_dir)` draws the figures below into fig_dir and returns the section's blocks.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from analysis import describe, discussion, figures_search, figures_vae, vae_runs
from analysis.common import draw_figures, figure_block, fmt_num
from analysis.results import StudyResults

# (part, key, caption, function)
FIGURES = [
    ("vae", "vae_elbo", "Negative ELBO per epoch for KL weight 1, 100, 0: nats/image and bits/dim.", figures_vae.fig_vae_elbo),
    ("vae", "vae_terms", "Reconstruction and KL terms per epoch.", figures_vae.fig_vae_terms),
    ("vae", "vae_reconstructions", "Real held-out images and their reconstructions, per KL weight.", figures_vae.fig_vae_reconstructions),
    ("vae", "vae_samples", "Samples from the prior, per KL weight.", figures_vae.fig_vae_samples),
    ("vae", "vae_interpolation", "Interpolation between two real images' latent codes, per KL weight.", figures_vae.fig_vae_interpolation),
    ("vae", "vae_tradeoff", "KL against reconstruction term over all VAE runs.", figures_vae.fig_vae_tradeoff),
    ("vae", "vae_search_history", "Optuna optimisation history of the VAE search.", figures_search.fig_vae_search_history),
    ("vae", "vae_search_importance", "Parameter importances of the VAE search.", figures_search.fig_vae_search_importance),
]


def section(results: StudyResults, part: str, fig_dir: Path, out_dir: Path) -> list:
    """Problem 2's questions (i-viii) answered from the part's runs; `results` is the part's view."""
    figs = draw_figures(FIGURES, results, fig_dir) if results.select(part=part) else {}
    fig = partial(figure_block, FIGURES, figs, results=results, out_dir=out_dir)
    b: list = [("h2", "Problem 2: variational autoencoder on anime faces")]
    runs = vae_runs.by_weight(results)
    ref = runs.get(1.0) or next(iter(runs.values()), None) or (results.select(trainable="vae") or [None])[0]
    if ref is None:
        return b + [("p", "This study has no finished VAE runs.")]
    b += [("h3", "i. Preprocessing and architecture (from the KL x1 run's config)"), ("list", describe.vae_preprocessing(ref))]
    b.append(("pre", describe.vae_model(ref)))
    choice = discussion.vae_choice(results)
    b += [("h3", "How the runs are chosen and scored"), ("p", choice)] if choice else []
    b += [("h3", "ii. Learning curves (vi: KL x100, vii: KL x0 on the same axes)"), fig("vae_elbo"), fig("vae_terms")]
    b += _iw_blocks(runs)
    b += [("h3", "iii. Reconstructions"), fig("vae_reconstructions")]
    b += [("h3", "iv. Samples from the prior"), fig("vae_samples")]
    b += [("h3", "v. Interpolation in latent space"), fig("vae_interpolation")]
    b += [("h3", "KL / reconstruction trade-off and the search"), fig("vae_tradeoff"), fig("vae_search_history"),
          fig("vae_search_importance")]
    b += [("h3", "viii. Discussion: the effect of the KL term")] + [("p", p) for p in discussion.vae_discussion(results)]
    return b


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
