/**
 * `--report run.html`: one self-contained HTML page about a `sluice fetch` or `sluice exec` run —
 * summary numbers, in flight over time against the concurrency limit (one that adapts is drawn
 * as it moved), starts per second against the
 * configured rate, a latency histogram with p50/p90/p99, statuses and retries, the slowest and the
 * failed requests.
 *
 * Invariants: memory is bounded whatever the run's length (entries are aggregated as they come, see
 * report-aggregate.ts); the page loads nothing (no script, font, image or stylesheet from anywhere,
 * and a Content-Security-Policy that forbids it); every string from input or a server is redacted
 * (report-safe.ts) and HTML-escaped before it reaches the page.
 */
import { RunAggregate } from './report-aggregate.ts';
import type { ReportSink, RunConfig } from './report-data.ts';
import { renderPage, type RunEnd } from './report-page.ts';

export { redactSecrets } from './report-safe.ts';

/**
 * Starts a report for a run with `config`, begun at `startedAt` (epoch milliseconds, `Date.now()`).
 * Feed it every entry with `add` as the entry ends (in any order), call `finish` when the run is
 * over, and write `render()` to the report file. `render` may be called at any time, also before
 * `finish` (the page then says the run was still going).
 *
 * @example
 * const report = createReport({ command: 'fetch', concurrency: 8, rates: ['10/s'], retries: 2 }, Date.now());
 * for await (const entry of entries) report.add(entry);
 * report.finish(performance.now() - t0, false);
 * await writeFile('run.html', report.render());
 */
export function createReport(config: RunConfig, startedAt: number): ReportSink {
  const aggregate = new RunAggregate();
  let end: RunEnd | undefined;
  return {
    add(entry) {
      aggregate.add(entry);
    },
    limit(at, limit) {
      aggregate.setLimit(at, limit);
    },
    finish(durationMs, interrupted) {
      end = { durationMs, interrupted };
    },
    render() {
      return renderPage(config, startedAt, aggregate, end);
    },
  };
}
