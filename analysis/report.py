"""The report folder: index.html (offline: figures beside it, no CDN) and report.md built from the same blocks.

`write_report(results, out_dir)` has each part's section (its trainable's `report_section`, else the generic one)
draw its figures into out_dir/figures and give its blocks, then writes both documents. A figure the study's data
cannot give is listed with its reason; a code error raises.
"""
from __future__ import annotations

import datetime as _dt
import html
import importlib
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from analysis.results import Part, StudyResults
from trainables import registry
from trainables.names import ERROR_TAG, KIND_TAG, PRESET_TAG, STUDY_FILE

GENERIC = "analysis.section_generic:section"  # a part whose trainable names no section, or cannot be imported


def section_of(part: Part) -> Callable[..., list]:
    """The part's report section: its trainable's `report_section` ("module:function") where analysis can import
    the trainable (a built-in or an installed entry point), else the generic one."""
    try:
        ref = registry.get(part.trainable).report_section or GENERIC
    except registry.PluginError:  # a plugin beside its study file on another machine: what every study logs
        ref = GENERIC
    module, _, function = ref.partition(":")
    return getattr(importlib.import_module(module), function)


def __getattr__(name: str) -> list:
    """`FIGURES`: every figure of the built-in trainables' sections, (part, key, caption, function), as a homework
    report draws them (the tests count them); computed on first use, since it imports the built-ins."""
    if name != "FIGURES":
        raise AttributeError(name)
    return [f for n in registry.BUILTINS for f in importlib.import_module(
        registry.get(n).report_section.partition(":")[0]).FIGURES]


def part_blocks(results: StudyResults, out_dir: Path) -> list:
    """Each part's section, drawn into figures/ (figures/<part>/ for a second part of one trainable, whose
    section names its files as the first one does)."""
    blocks: list = []
    for part in results.parts():
        fig_dir = out_dir / "figures" / ("" if part.name == part.trainable else part.name)
        blocks += section_of(part)(results.of_part(part.name), part.name, fig_dir, out_dir)
    return blocks


def build_blocks(results: StudyResults, out_dir: Path) -> list:
    counts = Counter((r.trainable, r.group) for r in results.runs)
    b: list = [("h1", f"Study report: {results.name}")]
    preset = results.parent_tags.get(PRESET_TAG)
    b.append(("p", f"Kind {results.parent_tags.get(KIND_TAG, '?')}" + (f", preset {preset}" if preset else "") + "; "
              f"{len(results.runs)} finished runs (" + ", ".join(f"{n} {t}/{g}" if g else f"{n} {t}" for (t, g), n in sorted(counts.items()))
              + f"), {len(results.failed)} not finished. Tracking store: {results.tracking_uri}. "
              f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}."))
    if results.failed:
        b.append(("list", [f"{r.trial_id} ({r.trainable}/{r.group}): {r.status}" + (f", {r.tags[ERROR_TAG]}" if r.tags.get(ERROR_TAG) else "")
                           for r in results.failed]))
    b += part_blocks(results, out_dir)
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
    blocks = build_blocks(results, out)
    _write(out / "report.md", to_markdown(blocks))
    index = out / "index.html"
    _write(index, to_html(blocks, f"Study report: {results.name}", out))
    return index
