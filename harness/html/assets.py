"""The page's stylesheet and script, inlined into every page (nothing is fetched)."""

from __future__ import annotations

# Okabe–Ito colours (distinguishable with the common colour-vision deficiencies); every status
# also has its own symbol, so colour is never the only cue.
CSS = """
:root {
  --fg: #1d1f23; --muted: #5b6170; --bg: #ffffff; --bg2: #f5f6f8; --line: #dfe2e8;
  --pass: #007a5e; --pass-bg: #e3f4ee; --fail: #b34400; --fail-bg: #fde9dc;
  --error: #8e2a6b; --error-bg: #f7e3f0; --unsup: #5f6368; --unsup-bg: #eceef1;
  --skip: #7a6a00; --accent: #0072b2; --changed: #e69f00;
  --mono: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace;
  color-scheme: light;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans",
  "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg2); }
a { color: var(--accent); }
code, pre, kbd { font-family: var(--mono); font-size: 0.86em; }
h1 { font-size: 1.15rem; margin: 0; font-weight: 650; }
h2 { font-size: 1.25rem; margin: 0 0 0.75rem; }
h3 { font-size: 1.02rem; margin: 0 0 0.4rem; }
header.top { position: sticky; top: 0; z-index: 20; background: var(--bg);
  border-bottom: 1px solid var(--line); box-shadow: 0 1px 4px rgba(0,0,0,.05); }
.top-inner { max-width: 1280px; margin: 0 auto; padding: 0.55rem 1rem; display: flex;
  flex-wrap: wrap; gap: 0.4rem 1.2rem; align-items: center; }
.top .when { color: var(--muted); font-size: 0.85rem; }
.counts { display: flex; gap: 0.35rem; flex-wrap: wrap; }
nav.sections { display: flex; gap: 0.9rem; margin-left: auto; font-size: 0.9rem;
  overflow-x: auto; white-space: nowrap; max-width: 100%; }
nav.sections a { text-decoration: none; }
nav.sections a:hover { text-decoration: underline; }
main { max-width: 1280px; margin: 0 auto; padding: 1rem; }
section.block { background: var(--bg); border: 1px solid var(--line); border-radius: 10px;
  padding: 1rem 1.1rem 1.2rem; margin: 0 0 1.1rem; scroll-margin-top: 4.5rem; }
.sub { color: var(--muted); font-size: 0.88rem; margin: -0.4rem 0 0.9rem; }
.badge { display: inline-flex; align-items: center; gap: 0.25em; padding: 0.05em 0.55em;
  border-radius: 999px; font-size: 0.82rem; font-weight: 600; white-space: nowrap;
  border: 1px solid transparent; }
.s-pass { color: var(--pass); background: var(--pass-bg); border-color: #b6e0d1; }
.s-fail { color: var(--fail); background: var(--fail-bg); border-color: #f3c3a4; }
.s-error { color: var(--error); background: var(--error-bg); border-color: #e4b8d5; }
.s-unsupported { color: var(--unsup); background: var(--unsup-bg); border-color: #d7dbe0; }
.s-skipped { color: var(--skip); background: #f8f3d6; border-color: #e8dc9c; }
.s-none { color: var(--muted); background: transparent; }
.legend { display: flex; gap: 0.5rem 1rem; flex-wrap: wrap; align-items: center;
  font-size: 0.85rem; color: var(--muted); margin-bottom: 0.9rem; }
.toggle { display: inline-flex; gap: 0.35rem; align-items: center; cursor: pointer; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 340px), 1fr));
  gap: 0.9rem; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 0.75rem; min-width: 0; }
.card.probe { border-left: 4px solid var(--accent); }
.card .desc { color: var(--muted); font-size: 0.84rem; margin: 0 0 0.6rem;
  display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; }
.scroll { overflow: auto; max-width: 100%; }
table { border-collapse: separate; border-spacing: 0; }
table.mx { font-size: 0.85rem; }
table.mx th { font-weight: 600; text-align: center; padding: 0.25rem 0.35rem;
  color: var(--muted); vertical-align: bottom; overflow-wrap: anywhere; min-width: 4.2rem; }
table.mx th.row { text-align: right; color: var(--fg); white-space: nowrap; min-width: 0; }
table.mx th.corner { text-align: right; font-weight: 500; font-size: 0.75rem; }
table.mx td { padding: 2px; }
table.mx a.cell, table.ov a.cell { display: flex; }
.banner a.cell, .panel a.cell { min-width: 2.2rem; min-height: 1.6rem; vertical-align: middle; }
td.pair { white-space: nowrap; }
.bench-group { display: grid; grid-template-columns: minmax(0, 460px) minmax(0, 1fr);
  gap: 0.5rem 1.5rem; align-items: start; margin-bottom: 0.9rem; }
@media (max-width: 900px) { .bench-group { grid-template-columns: minmax(0, 1fr); } }
a.cell { display: inline-flex; align-items: center; justify-content: center; gap: 0.3em;
  min-width: 4.2rem; min-height: 2.1rem; padding: 0.15rem 0.45rem; border-radius: 6px;
  text-decoration: none; font-weight: 600; border: 1px solid transparent; position: relative; }
a.cell:hover, a.cell:focus-visible { outline: 2px solid var(--fg); outline-offset: 1px; }
a.cell .sym { font-size: 1.05em; }
a.cell.changed { box-shadow: 0 0 0 3px var(--changed); }
a.cell .delta { position: absolute; top: -7px; right: -5px; background: var(--changed);
  color: #000; font-size: 0.65rem; border-radius: 999px; padding: 0 0.3em; line-height: 1.4; }
td.empty { color: var(--line); text-align: center; }
.overview { max-height: 75vh; border: 1px solid var(--line); border-radius: 8px; }
table.ov { font-size: 0.85rem; }
table.ov thead th { position: sticky; top: 0; z-index: 2; background: var(--bg);
  border-bottom: 1px solid var(--line); padding: 0.4rem 0.4rem; font-weight: 600;
  white-space: nowrap; }
table.ov th.row { position: sticky; left: 0; z-index: 1; background: var(--bg);
  text-align: left; font-weight: 600; white-space: nowrap; padding: 0.2rem 0.6rem;
  border-right: 1px solid var(--line); }
table.ov thead th.row { z-index: 3; }
table.ov td { padding: 2px 3px; }
table.ov a.cell { min-width: 2.6rem; min-height: 1.9rem; }
body.only-bad tr.all-pass { display: none; }
body.only-bad a.cell.s-pass { opacity: 0.25; }
table.data { font-size: 0.88rem; width: 100%; }
table.data th, table.data td { text-align: left; padding: 0.35rem 0.6rem;
  border-bottom: 1px solid var(--line); vertical-align: top; }
table.data th { color: var(--muted); font-weight: 600; position: sticky; top: 0;
  background: var(--bg); }
table.data td.num, table.data th.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
tr.moved td { background: #fff4d6; }
.up { color: var(--pass); font-weight: 600; }
.down { color: var(--fail); font-weight: 600; }
.chips { display: flex; flex-wrap: wrap; gap: 0.25rem; }
.chip { font-size: 0.75rem; background: var(--bg2); border: 1px solid var(--line);
  border-radius: 4px; padding: 0 0.35em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1rem; margin: 0;
  font-size: 0.9rem; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.panel-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr));
  gap: 1rem; }
.panel { border: 1px solid var(--line); border-radius: 8px; padding: 0.8rem; min-width: 0; }
.peers { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 320px), 1fr));
  gap: 0.7rem; }
.panel.peer h3 { display: flex; gap: 0.5rem; align-items: center; flex-wrap: wrap; margin: 0; }
.panel.foreign { background: repeating-linear-gradient(135deg, #fafafa 0 10px, #f3f3f3 10px 20px);
  border-style: dashed; }
.foreign-tag { display: inline-block; background: #444; color: #fff; font-size: 0.72rem;
  font-weight: 700; letter-spacing: 0.04em; text-transform: uppercase; border-radius: 4px;
  padding: 0.05em 0.45em; margin-left: 0.4em; vertical-align: middle; }
svg.chart { width: 100%; max-width: 460px; height: auto; display: block;
  margin: 0.3rem 0 0.6rem; }
svg.chart text { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: var(--fg); }
svg.chart text.tick { font-size: 10px; fill: var(--muted); }
svg.chart text.value { font-size: 11px; font-variant-numeric: tabular-nums; }
svg.chart text.value.inside { font-weight: 600; }
svg.chart path.break { stroke: #fff; stroke-width: 3; }
svg.chart line.grid { stroke: var(--line); stroke-width: 1; }
svg.chart path.whisker { stroke: var(--fg); stroke-width: 1.5; fill: none; }
svg.chart path.marker { stroke: var(--changed); stroke-width: 3; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px;
  vertical-align: -0.05em; margin-right: 0.25em; }
.banner { background: #fff8e6; border: 1px solid #f0d48a; border-radius: 10px;
  padding: 0.8rem 1rem; margin-bottom: 1.1rem; }
.banner ul { margin: 0.4rem 0 0; padding-left: 1.2rem; }
.notice { color: var(--muted); font-style: italic; }
dialog.drill { width: min(1000px, calc(100vw - 16px)); max-width: none;
  max-height: calc(100vh - 16px); padding: 0; border: 1px solid var(--line);
  border-radius: 10px; box-shadow: 0 10px 40px rgba(0,0,0,.25); color: var(--fg); }
dialog.drill::backdrop { background: rgba(20, 24, 32, 0.45); }
.drill-head { position: sticky; top: 0; z-index: 2; background: var(--bg);
  border-bottom: 1px solid var(--line); padding: 0.7rem 1rem; display: flex; gap: 0.6rem;
  align-items: flex-start; }
.drill-head h2 { font-size: 1.08rem; margin: 0; flex: 1; overflow-wrap: anywhere; }
.drill-body { padding: 0.8rem 1rem 1.2rem; }
.drill-body h3 { margin-top: 1.1rem; }
button.close { border: 1px solid var(--line); background: var(--bg2); border-radius: 6px;
  font-size: 1rem; line-height: 1; padding: 0.35rem 0.6rem; cursor: pointer; }
.reason { padding: 0.5rem 0.7rem; border-radius: 6px; margin: 0 0 0.6rem;
  overflow-wrap: anywhere; }
ol.steps { list-style: none; margin: 0; padding: 0; }
ol.steps li { display: grid; grid-template-columns: 2.2rem 1fr auto; gap: 0.1rem 0.6rem;
  padding: 0.4rem 0; border-bottom: 1px solid var(--line); }
ol.steps .n { color: var(--muted); text-align: right; font-variant-numeric: tabular-nums; }
ol.steps .label { font-weight: 600; }
ol.steps .action { color: var(--muted); font-size: 0.8rem; margin-left: 0.4em;
  font-family: var(--mono); }
ol.steps .secs { font-variant-numeric: tabular-nums; white-space: nowrap; text-align: right; }
ol.steps .detail { grid-column: 2 / 4; font-size: 0.85rem; color: var(--muted);
  overflow-wrap: anywhere; }
ol.steps .track { grid-column: 2 / 4; height: 6px; background: var(--bg2); border-radius: 3px;
  position: relative; }
ol.steps .track span { position: absolute; top: 0; bottom: 0; min-width: 2px; border-radius: 3px;
  background: var(--accent); }
ol.steps li.st-fail .track span { background: var(--fail); }
ol.steps li.st-skipped .track span { background: #b8a900; }
details.log { border: 1px solid var(--line); border-radius: 6px; margin: 0.4rem 0; }
details.log summary { cursor: pointer; padding: 0.4rem 0.6rem; font-size: 0.88rem; }
details.log pre { margin: 0; padding: 0.5rem 0.7rem; max-height: 55vh; overflow: auto;
  background: #0f1115; color: #e8e8e8; border-radius: 0 0 6px 6px; font-size: 0.78rem;
  line-height: 1.4; white-space: pre-wrap; overflow-wrap: anywhere; }
.cmd { display: flex; gap: 0.4rem; align-items: stretch; margin: 0.3rem 0 0.5rem; }
.cmd code { flex: 1; background: #0f1115; color: #e8e8e8; padding: 0.45rem 0.6rem;
  border-radius: 6px; overflow-x: auto; white-space: pre; }
button.copy { border: 1px solid var(--line); background: var(--bg2); border-radius: 6px;
  cursor: pointer; font-size: 0.8rem; padding: 0 0.6rem; }
ul.files { margin: 0.2rem 0; padding-left: 1.2rem; font-size: 0.88rem; }
footer { color: var(--muted); font-size: 0.8rem; text-align: center; padding: 1rem; }
@media (max-width: 640px) {
  body { font-size: 14px; }
  main { padding: 0.5rem; }
  section.block { padding: 0.75rem; border-radius: 8px; }
  nav.sections { margin-left: 0; gap: 0.8rem; }
  .top-inner { padding: 0.45rem 0.6rem; gap: 0.25rem 0.8rem; }
  a.cell { min-width: 3rem; }
  a.cell .word { display: none; }
  table.ov th.row { white-space: normal; max-width: 9.5rem; overflow-wrap: anywhere; }
  table.mx th { min-width: 3rem; }
  dl.meta { grid-template-columns: 1fr; }
  dl.meta dt { margin-top: 0.3rem; }
  .drill-body { padding: 0.6rem 0.7rem 1rem; }
  dialog.drill { max-height: calc(100vh - 8px); width: calc(100vw - 8px); }
}
@media print {
  header.top { position: static; }
  dialog.drill { display: none; }
}
"""

JS = """
(function () {
  "use strict";
  function setHash(hash) {
    try {
      history.replaceState(null, "", hash || location.pathname + location.search);
    } catch (e) { /* file:// pages may refuse; the hash is a convenience only */ }
  }
  function openCell(id) {
    var dlg = document.getElementById(id);
    if (!dlg || typeof dlg.showModal !== "function") { return false; }
    if (!dlg.open) { dlg.showModal(); }
    setHash("#" + id.replace(/^dlg-/, "c-"));
    return true;
  }
  document.addEventListener("click", function (ev) {
    var target = ev.target instanceof Element ? ev.target : null;
    if (!target) { return; }
    var cell = target.closest("[data-cell]");
    if (cell) {
      if (openCell(cell.getAttribute("data-cell"))) { ev.preventDefault(); }
      return;
    }
    var close = target.closest("[data-close]");
    if (close) { close.closest("dialog").close(); return; }
    var copy = target.closest("[data-copy]");
    if (copy) {
      var text = copy.getAttribute("data-copy");
      var done = function () { copy.textContent = "copied"; };
      var fallback = function () {
        var code = copy.parentElement.querySelector("code");
        if (code) {
          var range = document.createRange();
          range.selectNodeContents(code);
          var sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          copy.textContent = "selected";
        }
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, fallback);
      } else { fallback(); }
      return;
    }
    if (target.tagName === "DIALOG") {  // a click on the backdrop
      var r = target.getBoundingClientRect();
      if (ev.clientX < r.left || ev.clientX > r.right || ev.clientY < r.top ||
          ev.clientY > r.bottom) { target.close(); }
    }
  });
  document.querySelectorAll("dialog.drill").forEach(function (dlg) {
    dlg.addEventListener("close", function () { setHash(""); });
  });
  var only = document.getElementById("only-bad");
  if (only) {
    only.addEventListener("change", function () {
      document.body.classList.toggle("only-bad", only.checked);
    });
  }
  function fromHash() {
    var m = /^#c-(\\d+)$/.exec(location.hash);
    document.querySelectorAll("dialog.drill[open]").forEach(function (d) {
      if (!m || d.id !== "dlg-" + m[1]) { d.close(); }
    });
    if (m) { openCell("dlg-" + m[1]); }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""
