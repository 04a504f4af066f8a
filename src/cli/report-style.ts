/**
 * The report's stylesheet, inlined into the page. Light by default, dark under
 * `prefers-color-scheme: dark`, and light again on paper. The charts take their colours from the
 * same variables through class names.
 */
export const REPORT_CSS = `
:root {
  color-scheme: light dark;
  --bg: #f7f7f5; --fg: #1c1e22; --muted: #5d646e; --card: #ffffff; --border: #e0e2e6;
  --grid: #e8eaed; --axis: #9aa1ab; --accent: #3467c9; --area: rgba(52, 103, 201, 0.22);
  --retry: #d9950f; --fail: #cf3f35; --ok: #2b8f55; --redirect: #6d7fa3; --client: #d9950f;
  --limit: #b5175a; --marker: #3a3f47; --hover: rgba(52, 103, 201, 0.14); --skip: #a4a9b1;
  --banner: #fff4d6; --banner-border: #e8c25a;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #15171b; --fg: #e3e5e9; --muted: #9aa2ad; --card: #1d2025; --border: #2d3239;
    --grid: #2a2e35; --axis: #5f6671; --accent: #6e9bf0; --area: rgba(110, 155, 240, 0.25);
    --retry: #f0b545; --fail: #f0675c; --ok: #4fc383; --redirect: #93a3c4; --client: #f0b545;
    --limit: #f2689f; --marker: #d5d9df; --hover: rgba(110, 155, 240, 0.18); --skip: #6c727c;
    --banner: #3a3020; --banner-border: #8a6d2a;
  }
}
@media print {
  :root {
    --bg: #fff; --fg: #000; --muted: #444; --card: #fff; --border: #ccc; --grid: #e4e4e4;
    --axis: #888; --accent: #2f5fb8; --area: rgba(47, 95, 184, 0.25); --limit: #b5175a;
    --retry: #d9950f; --fail: #cf3f35; --ok: #2b8f55; --redirect: #6d7fa3; --client: #d9950f;
    --skip: #a4a9b1; --marker: #222; --banner: #fff; --banner-border: #999;
  }
  section, figure, tr { break-inside: avoid; }
  .hover:hover { fill: transparent; }
}
* { box-sizing: border-box; }
html { background: var(--bg); color: var(--fg); }
body {
  margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  -webkit-print-color-adjust: exact; print-color-adjust: exact;
}
main { max-width: 1000px; margin: 0 auto; padding: 28px 24px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; letter-spacing: -0.01em; }
h1 .tool { color: var(--muted); font-weight: 500; }
h2 { font-size: 1.1rem; margin: 0 0 10px; }
p { margin: 0 0 8px; }
.meta, .note, figcaption, footer { color: var(--muted); font-size: 0.88rem; }
.banner {
  margin: 14px 0 0; padding: 10px 14px; border: 1px solid var(--banner-border);
  background: var(--banner); border-radius: 6px;
}
section {
  margin: 18px 0 0; padding: 16px 18px; background: var(--card); border: 1px solid var(--border);
  border-radius: 8px;
}
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.card { padding: 10px 12px; border: 1px solid var(--border); border-radius: 6px; }
.card .label { color: var(--muted); font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.04em; }
.card .value { font-size: 1.45rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: 0.84rem; }
.card.good .value { color: var(--ok); }
.card.bad .value { color: var(--fail); }
.limits { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 0; }
.limits div { display: flex; gap: 6px; }
.limits dt { color: var(--muted); }
.limits dd { margin: 0; font-weight: 600; }
figure { margin: 0; }
/* On a narrow screen charts and tables keep a readable size and scroll sideways. */
.scroll { overflow-x: auto; }
svg.chart { display: block; width: 100%; min-width: 640px; height: auto; }
svg.chart text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: var(--muted); }
svg.chart .axis-title { font-size: 12px; fill: var(--fg); }
svg.chart .grid { stroke: var(--grid); stroke-width: 1; }
svg.chart .axis { stroke: var(--axis); stroke-width: 1; }
svg.chart .area { fill: var(--area); stroke: var(--accent); stroke-width: 1.5; stroke-linejoin: round; }
svg.chart .bar { fill: var(--accent); }
svg.chart .bar-retry { fill: var(--retry); }
svg.chart .bar-fail { fill: var(--fail); }
svg.chart .limit { stroke: var(--limit); stroke-width: 1.5; stroke-dasharray: 6 4; }
svg.chart .limit-line { fill: none; stroke: var(--limit); stroke-width: 1.5; stroke-linejoin: round; }
svg.chart .limit-label { fill: var(--limit); font-weight: 600; }
svg.chart .marker { stroke: var(--marker); stroke-width: 1; stroke-dasharray: 3 3; }
svg.chart .marker-label { fill: var(--fg); font-weight: 600; }
svg.chart .limit-label, svg.chart .marker-label {
  paint-order: stroke; stroke: var(--card); stroke-width: 4px; stroke-linejoin: round;
}
svg.chart .hover { fill: transparent; }
svg.chart .hover:hover, svg.chart g:hover rect { fill-opacity: 0.75; }
svg.chart .hover:hover { fill: var(--hover); }
svg.chart .empty { font-size: 14px; }
svg.chart .row-label { fill: var(--fg); font-variant-numeric: tabular-nums; }
svg.chart .row-count { font-variant-numeric: tabular-nums; }
.st-ok { fill: var(--ok); } .st-redirect { fill: var(--redirect); } .st-client { fill: var(--client); }
.st-429 { fill: var(--retry); } .st-server, .st-none { fill: var(--fail); } .st-skip { fill: var(--skip); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 6px 0 0; color: var(--muted); font-size: 0.86rem; }
.legend span::before {
  content: ""; display: inline-block; width: 12px; height: 12px; margin-right: 6px;
  vertical-align: -1px; border-radius: 2px; background: var(--swatch);
}
.legend .dashed::before { height: 0; border-top: 2px dashed var(--swatch); border-radius: 0; vertical-align: 3px; width: 18px; }
.stats { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 8px 0 0; font-variant-numeric: tabular-nums; }
.stats b { font-weight: 600; }
.split { display: grid; grid-template-columns: minmax(0, 1fr); gap: 18px; }
table { width: 100%; min-width: 640px; border-collapse: collapse; font-size: 0.88rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--border); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.03em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.target { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.82rem; overflow-wrap: anywhere; }
td.error { white-space: pre-wrap; overflow-wrap: anywhere; color: var(--fail); }
.fail-status { color: var(--fail); font-weight: 600; }
footer { margin: 22px 0 0; text-align: center; }
`;
