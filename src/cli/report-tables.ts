/**
 * The report's rows: statuses and retries as bar-chart rows, and the tables of the slowest and the
 * failed requests. Targets and errors arrive redacted and clipped (report-aggregate.ts) and are
 * escaped here, cell by cell.
 */
import { STATUS_CODES } from 'node:http';
import type { KeptRequest, RunAggregate } from './report-aggregate.ts';
import type { RunConfig } from './report-data.ts';
import { formatCount, formatMs } from './report-format.ts';
import { escapeHtml } from './report-safe.ts';
import type { BarRow } from './report-svg.ts';

type Command = RunConfig['command'];

/** `404 Not Found`, `exit 2`; a negative status stands for none. */
export function statusLabel(command: Command, status: number): string {
  if (command === 'exec') return status < 0 ? 'no exit code' : `exit ${status}`;
  if (status < 0) return 'no response';
  const phrase = STATUS_CODES[status];
  return phrase === undefined ? String(status) : `${status} ${phrase}`;
}

/** The CSS class a status is drawn with. */
export function statusKind(command: Command, status: number): string {
  if (status < 0) return 'st-none';
  if (command === 'exec') return status === 0 ? 'st-ok' : 'st-server';
  if (status === 429) return 'st-429';
  if (status < 300) return 'st-ok';
  if (status < 400) return 'st-redirect';
  return status < 500 ? 'st-client' : 'st-server';
}

/** The final statuses (or exit codes), then what was cancelled or never ran. */
export function statusRows(a: RunAggregate, command: Command): BarRow[] {
  const rows: BarRow[] = [...a.statuses.counts]
    .sort(([x], [y]) => (x < 0 ? 1 : y < 0 ? -1 : x - y))
    .map(([status, count]) => ({
      label: statusLabel(command, status),
      count,
      kind: statusKind(command, status),
    }));
  if (a.statuses.other > 0) rows.push({ label: 'other', count: a.statuses.other, kind: 'st-none' });
  if (a.cancelled > 0) rows.push({ label: 'cancelled', count: a.cancelled, kind: 'st-skip' });
  if (a.notRun > 0) rows.push({ label: 'not run', count: a.notRun, kind: 'st-skip' });
  return rows;
}

/** What the retried attempts got: statuses, and errors or timeouts without one. */
export function retryRows(a: RunAggregate, command: Command): BarRow[] {
  const rows: BarRow[] = [...a.retriedStatuses.counts]
    .sort(([x], [y]) => x - y)
    .map(([status, count]) => ({
      label: statusLabel(command, status),
      count,
      kind: statusKind(command, status),
    }));
  if (a.retriedStatuses.other > 0)
    rows.push({ label: 'other', count: a.retriedStatuses.other, kind: 'st-none' });
  if (a.retriedWithoutStatus > 0) {
    rows.push({ label: 'error or timeout', count: a.retriedWithoutStatus, kind: 'st-none' });
  }
  return rows;
}

/** The header words that differ between `fetch` and `exec`: `URL`/`Command`, `Status`/`Exit code`. */
export interface TableWords {
  target: string;
  status: string;
}

function statusCell(request: KeptRequest): string {
  const status = request.status === undefined ? '–' : escapeHtml(String(request.status));
  return `<td class="num${request.ok ? '' : ' fail-status'}">${status}</td>`;
}

function num(value: string): string {
  return `<td class="num">${escapeHtml(value)}</td>`;
}

/** The slowest requests, slowest first, with their rank and input line. */
export function slowestTable(requests: KeptRequest[], words: TableWords): string {
  const rows = requests.map(
    (request, i) =>
      `<tr>${num(String(i + 1))}${num(formatCount(request.index + 1))}` +
      `<td class="target">${escapeHtml(request.target)}</td>${statusCell(request)}` +
      `${num(formatMs(request.ms))}${num(formatCount(request.attempts))}</tr>`,
  );
  return (
    '<table><thead><tr><th class="num">rank</th><th class="num">line</th>' +
    `<th>${escapeHtml(words.target)}</th><th class="num">${escapeHtml(words.status)}</th>` +
    `<th class="num">time</th><th class="num">attempts</th></tr></thead><tbody>${rows.join('')}</tbody></table>`
  );
}

/** The failed requests in input order, with their errors. */
export function failedTable(requests: KeptRequest[], words: TableWords): string {
  const rows = [...requests]
    .sort((x, y) => x.index - y.index)
    .map(
      (request) =>
        `<tr>${num(formatCount(request.index + 1))}` +
        `<td class="target">${escapeHtml(request.target)}</td>${statusCell(request)}` +
        `<td class="error">${escapeHtml(request.error ?? '')}</td>` +
        `${num(formatCount(request.attempts))}${num(formatMs(request.ms))}</tr>`,
    );
  return (
    `<table><thead><tr><th class="num">line</th><th>${escapeHtml(words.target)}</th>` +
    `<th class="num">${escapeHtml(words.status)}</th><th>error</th><th class="num">attempts</th>` +
    `<th class="num">time</th></tr></thead><tbody>${rows.join('')}</tbody></table>`
  );
}
