/**
 * The report page, drawn from the aggregates: header, summary cards, limits, the charts, the
 * statuses and retries, the tables. One HTML document with its CSS inline and a
 * Content-Security-Policy that lets it load nothing and run no script — the charts are SVG drawn
 * here, and tooltips are SVG `<title>`s.
 *
 * Everything interpolated into the markup is either a number we formatted or goes through
 * `escapeHtml`; strings from input or a server were redacted when they were kept.
 */
import { formatRate, parseRate } from '../_parse.ts';
import { BINS_PER_DECADE, FAILURES, SLOWEST, type RunAggregate } from './report-aggregate.ts';
import type { RunConfig } from './report-data.ts';
import {
  formatBytes,
  formatClock,
  formatCount,
  formatMs,
  formatPerSecond,
} from './report-format.ts';
import { escapeHtml } from './report-safe.ts';
import { REPORT_CSS } from './report-style.ts';
import {
  barsChart,
  inFlightChart,
  latencyChart,
  startsChart,
  type Marker,
  type RateLine,
} from './report-svg.ts';
import { failedTable, retryRows, slowestTable, statusRows } from './report-tables.ts';

/** How the run ended: unset while it is still going. */
export interface RunEnd {
  durationMs: number;
  interrupted: boolean;
}

/** The words that differ between `fetch` and `exec`. */
function nouns(command: RunConfig['command']) {
  return command === 'exec'
    ? {
        one: 'command',
        many: 'commands',
        target: 'Command',
        status: 'Exit code',
        statuses: 'Exit codes',
      }
    : { one: 'request', many: 'requests', target: 'URL', status: 'Status', statuses: 'Statuses' };
}

/** The configured global rates as lines in starts per second; unreadable ones are left out. */
function rateLines(rates: readonly string[]): RateLine[] {
  const lines: RateLine[] = [];
  for (const text of rates) {
    try {
      const rate = parseRate('rate', text);
      const perSecond = (rate.limit * 1000) / rate.interval;
      const name = formatRate(rate);
      lines.push({
        perSecond,
        label:
          rate.interval === 1000 ? `rate ${name}` : `rate ${name} = ${formatPerSecond(perSecond)}`,
      });
    } catch {
      // The CLI validated its rates; one it let through that we cannot read is simply not drawn.
    }
  }
  return lines;
}

function card(label: string, value: string, sub = '', tone = ''): string {
  return (
    `<div class="card${tone ? ` ${tone}` : ''}"><div class="label">${escapeHtml(label)}</div>` +
    `<div class="value">${escapeHtml(value)}</div>` +
    (sub ? `<div class="sub">${escapeHtml(sub)}</div>` : '') +
    '</div>'
  );
}

function percent(part: number, whole: number): string {
  return whole > 0 ? `${formatCount((100 * part) / whole, 1)}%` : '–';
}

/** A chart or table that scrolls sideways on a narrow screen instead of shrinking. */
function scroll(html: string): string {
  return `<div class="scroll">${html}</div>`;
}

function legend(items: [label: string, colour: string, dashed?: boolean][]): string {
  const spans = items.map(
    ([label, colour, dashed]) =>
      `<span${dashed ? ' class="dashed"' : ''} style="--swatch: var(--${colour})">${escapeHtml(label)}</span>`,
  );
  return `<p class="legend">${spans.join('')}</p>`;
}

/** The limits the run was given, as the user wrote them. */
function limitsList(config: RunConfig): string {
  const items: [string, string][] = [
    [
      'concurrency',
      config.adaptive === undefined
        ? formatCount(config.concurrency)
        : `auto (${config.adaptive.algorithm}, at most ${formatCount(config.adaptive.max)})`,
    ],
    ['rate', config.rates.length > 0 ? config.rates.join(' and ') : 'none'],
  ];
  if (config.perHostConcurrency !== undefined) {
    items.push(['per host', `${formatCount(config.perHostConcurrency)} at once`]);
  }
  if (config.perHostRates !== undefined && config.perHostRates.length > 0) {
    items.push(['per-host rate', config.perHostRates.join(' and ')]);
  }
  items.push(['retries', formatCount(config.retries)]);
  items.push(['timeout', config.timeoutMs === undefined ? 'none' : formatMs(config.timeoutMs)]);
  const entries = items.map(
    ([name, value]) => `<div><dt>${escapeHtml(name)}</dt><dd>${escapeHtml(value)}</dd></div>`,
  );
  return `<dl class="limits">${entries.join('')}</dl>`;
}

/** The whole page. */
export function renderPage(
  config: RunConfig,
  startedAt: number,
  a: RunAggregate,
  end: RunEnd | undefined,
): string {
  const words = nouns(config.command);
  const durationMs = end?.durationMs ?? a.lastTime;
  const spanMs = Math.max(durationMs, a.lastTime);
  const rates = rateLines(config.rates);
  const tightestRate =
    rates.length > 0 ? Math.min(...rates.map((rate) => rate.perSecond)) : undefined;
  const state = end === undefined ? 'still running' : end.interrupted ? 'interrupted' : 'finished';

  const h = a.latency;
  const hasLatency = h.count > 0;
  const ms = (us: number) => formatMs(us / 1000);
  const p = (q: number) => (hasLatency ? h.percentile(q) : 0);
  const markers: Marker[] = hasLatency
    ? [50, 90, 99].map((q) => ({ label: `p${q} ${ms(p(q))}`, us: p(q) }))
    : [];
  const latencyStats = hasLatency
    ? [
        ['p50', ms(p(50))],
        ['p90', ms(p(90))],
        ['p99', ms(p(99))],
        ['max', ms(h.max)],
        ['min', ms(h.min)],
        ['mean', ms(h.mean)],
        ['count', formatCount(h.count)],
      ]
        .map(([name, value]) => `<span>${name!} <b>${escapeHtml(value!)}</b></span>`)
        .join('')
    : `<span>No ${words.one} ran to an end.</span>`;

  // In flight, and an adaptive limit: the mean over the part of each bucket within the run.
  a.closeLimit(spanMs);
  const width = a.inFlight.width;
  const meanOf = (series: number): number[] =>
    Array.from(a.inFlight.values(series), (sum, i) => {
      const covered = Math.min(width, spanMs - i * width);
      return sum / (covered > 0 ? covered : width);
    });
  const means = meanOf(0);
  const limits = a.hasLimit ? meanOf(1) : undefined;
  const adaptive = config.adaptive !== undefined;
  const peakInFlight = means.reduce((max, v) => Math.max(max, v), 0);
  const startsWidth = a.starts.width;

  const cards = [
    card(words.many, formatCount(a.total), `${formatCount(a.attempts)} attempts`),
    card('ok', formatCount(a.ok), percent(a.ok, a.total), a.ok > 0 ? 'good' : ''),
    card('failed', formatCount(a.failed), percent(a.failed, a.total), a.failed > 0 ? 'bad' : ''),
    card(
      'not finished',
      `${formatCount(a.cancelled)} · ${formatCount(a.notRun)}`,
      'cancelled · not run',
    ),
    card('duration', formatMs(durationMs), state),
    card(
      'throughput',
      durationMs > 0 ? formatPerSecond(a.started / (durationMs / 1000)) : '–',
      tightestRate === undefined
        ? 'no rate limit set'
        : `configured ${formatPerSecond(tightestRate)}`,
    ),
    card('latency p50', hasLatency ? ms(p(50)) : '–', hasLatency ? `p99 ${ms(p(99))}` : ''),
    card(
      'in flight, peak',
      formatCount(peakInFlight, 1),
      `mean per ${formatMs(width)} · limit ${adaptive ? 'auto' : formatCount(config.concurrency)}`,
    ),
    card('retries', formatCount(a.retries), `${formatCount(a.retried)} ${words.many} retried`),
    ...(a.bytes > 0 ? [card('received', formatBytes(a.bytes))] : []),
  ];

  const banner =
    end === undefined
      ? '<p class="banner">The run was still going when this page was written: the numbers cover what had ended by then.</p>'
      : end.interrupted
        ? `<p class="banner"><b>Interrupted.</b> ${formatCount(a.cancelled)} ${a.cancelled === 1 ? `${words.one} in flight was` : `${words.many} in flight were`} cancelled and ${formatCount(a.notRun)} never started.</p>`
        : '';
  const perHostNote =
    config.perHostRates !== undefined && config.perHostRates.length > 0
      ? ' Per-host rates apply to each host and are not drawn.'
      : '';
  const tableWords = { target: words.target, status: words.status };
  const title = `sluice ${config.command} — ${formatCount(a.total)} ${words.many}, ${formatMs(durationMs)}`;

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="color-scheme" content="light dark">
<link rel="icon" href="data:,">
<title>${escapeHtml(title)}</title>
<style>${REPORT_CSS}</style>
</head>
<body>
<main>
<header>
<h1><span class="tool">sluice</span> ${escapeHtml(config.command)}</h1>
<p class="meta">Started ${escapeHtml(formatClock(startedAt))} · ${state} after ${escapeHtml(formatMs(durationMs))} · ${formatCount(a.total)} ${words.many}</p>
${banner}
</header>
<section class="cards" aria-label="Summary">${cards.join('')}</section>
<section>
<h2>Limits</h2>
${limitsList(config)}
</section>
<section>
<h2>In flight over time</h2>
<figure>${scroll(inFlightChart({ width, spanMs, means, limits }, adaptive ? undefined : config.concurrency))}
${
  adaptive
    ? legend([
        [`${words.many} in flight`, 'accent'],
        ['concurrency limit', 'limit'],
      ])
    : ''
}
<figcaption>Mean number of ${words.many} in flight in each ${escapeHtml(formatMs(width))} bucket, from the start of a ${words.one}'s first attempt to its end; ${adaptive ? `the line is the concurrency limit as it adapted (the mean in each bucket, all origins together, within the ceiling of ${formatCount(config.concurrency)})` : 'the dashed line is the concurrency limit'}.</figcaption></figure>
</section>
<section>
<h2>Starts per second</h2>
<figure>${scroll(startsChart({ width: startsWidth, spanMs, first: a.starts.values(0), retries: a.starts.values(1) }, rates))}
${legend([['first attempts', 'accent'], ['retries', 'retry'], ...(rates.length > 0 ? [['configured rate', 'limit', true] as [string, string, boolean]] : [])])}
<figcaption>Attempts started per second, counted in ${escapeHtml(formatMs(startsWidth))} buckets.${rates.length === 0 ? ' No global rate was set.' : ''}${perHostNote}</figcaption></figure>
</section>
<section>
<h2>Latency</h2>
<figure>${scroll(latencyChart({ ok: a.latencyBins[0], failed: a.latencyBins[1], binsPerDecade: BINS_PER_DECADE }, markers, words.many))}
${legend([
  ['ok', 'accent'],
  ['failed', 'fail'],
])}
<figcaption>How long each ${words.one} that ran to an end took (cancelled ones are left out), on a log scale.</figcaption></figure>
<p class="stats">${latencyStats}</p>
</section>
<section class="split">
<div>
<h2>${words.statuses}</h2>
${scroll(barsChart('chart-statuses', `${words.status} counts`, statusRows(a, config.command), a.total))}
</div>
<div>
<h2>Retries</h2>
<p class="note">${formatCount(a.retries)} retries over ${formatCount(a.retried)} ${words.many}${a.retries > 0 ? '; what the retried attempts got:' : '.'}</p>
${a.retries > 0 ? scroll(barsChart('chart-retries', 'What the retried attempts got', retryRows(a, config.command), a.retries)) : ''}
</div>
</section>
<section>
<h2>Slowest ${words.many}</h2>
${hasLatency ? scroll(slowestTable(a.slowest.sorted(), tableWords)) : `<p class="note">No ${words.one} ran to an end.</p>`}
<p class="note">The ${formatCount(SLOWEST)} slowest of those that ran to an end.</p>
</section>
<section>
<h2>Failed ${words.many}</h2>
${a.failures.length > 0 ? scroll(failedTable(a.failures, tableWords)) : '<p class="note">None failed.</p>'}
${a.failuresNotKept > 0 ? `<p class="note">The first ${formatCount(FAILURES)} failures are listed; ${formatCount(a.failuresNotKept)} more are not.</p>` : ''}
</section>
<footer>sluice · this page is self-contained: it loads nothing and runs no script · credentials in URLs, commands and messages are redacted</footer>
</main>
</body>
</html>
`;
}
