/**
 * The `--report` page: what it aggregates (percentiles, buckets that double, bounded memory over a
 * million entries), that nothing from input or a server can inject markup or leak a credential,
 * and that the page opens in headless Chromium with its charts drawn, no script error and no
 * network request.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, it } from 'node:test';
import {
  FAILURES,
  MAX_BUCKETS,
  RunAggregate,
  SLOWEST,
  Timeline,
} from '../src/cli/report-aggregate.ts';
import type { RunConfig, RunEntry } from '../src/cli/report-data.ts';
import { escapeHtml, redactSecrets } from '../src/cli/report-safe.ts';
import { createReport } from '../src/cli/report.ts';
import { seeded } from './_helpers/random.ts';

const HOSTILE_URL = `https://api.example.test/"><script>alert(1)</script><img src=x onerror=alert(2)>?a='1'`;

const CONFIG: RunConfig = { command: 'fetch', concurrency: 8, rates: ['10/s'], retries: 2 };

/** An entry that ran once and succeeded, `ms` long, starting at `start`; fields overridable. */
function entry(index: number, overrides: Partial<RunEntry> = {}): RunEntry {
  const start = overrides.start ?? index * 10;
  const ms = overrides.ms ?? 50;
  return {
    index,
    target: `https://api.example.test/items/${index}`,
    status: 200,
    ok: true,
    attempts: 1,
    attemptStarts: [start],
    start,
    end: start + ms,
    ms,
    retriedStatuses: [],
    ...overrides,
  };
}

// ---------------------------------------------------------------------------------------------
// A small HTML tokenizer, enough to read back what the report wrote the way a browser would:
// tags with their attributes (quoted or not), comments, raw text in <style>, entities in text.

interface Tag {
  name: string;
  attributes: Map<string, string>;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decode(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (match, name: string) => {
    if (name.startsWith('#x') || name.startsWith('#X')) {
      return String.fromCodePoint(parseInt(name.slice(2), 16));
    }
    if (name.startsWith('#')) return String.fromCodePoint(Number(name.slice(1)));
    return ENTITIES[name.toLowerCase()] ?? match;
  });
}

function parseHtml(html: string): { tags: Tag[]; text: string } {
  const tags: Tag[] = [];
  let text = '';
  let i = 0;
  const tagName = /<(\/?)([a-zA-Z][a-zA-Z0-9:-]*)/y;
  while (i < html.length) {
    if (html.startsWith('<!--', i)) {
      const close = html.indexOf('-->', i + 4);
      i = close < 0 ? html.length : close + 3;
      continue;
    }
    if (html.startsWith('<!', i)) {
      i = html.indexOf('>', i) + 1;
      continue;
    }
    tagName.lastIndex = i;
    const match = html[i] === '<' ? tagName.exec(html) : null;
    if (match === null) {
      const next = html.indexOf('<', i + 1);
      const end = next < 0 ? html.length : next;
      text += decode(html.slice(i, end));
      i = end;
      continue;
    }
    const closing = match[1] === '/';
    const name = match[2]!.toLowerCase();
    i = tagName.lastIndex;
    const attributes = new Map<string, string>();
    // Attributes, as the HTML tokenizer reads them.
    for (;;) {
      while (/[\s/]/.test(html[i] ?? '>')) i++;
      if (i >= html.length || html[i] === '>') break;
      let attribute = '';
      while (i < html.length && !/[\s/>=]/.test(html[i]!)) attribute += html[i++]!;
      while (/\s/.test(html[i] ?? '')) i++;
      let value = '';
      if (html[i] === '=') {
        i++;
        while (/\s/.test(html[i] ?? '')) i++;
        const quote = html[i];
        if (quote === '"' || quote === "'") {
          const close = html.indexOf(quote, i + 1);
          value = html.slice(i + 1, close);
          i = close + 1;
        } else {
          while (i < html.length && !/[\s>]/.test(html[i]!)) value += html[i++]!;
        }
      }
      attributes.set(attribute.toLowerCase(), decode(value));
    }
    i++;
    if (closing) continue;
    tags.push({ name, attributes });
    if (name === 'style' || name === 'script') {
      const close = html.toLowerCase().indexOf(`</${name}`, i);
      i = close < 0 ? html.length : close;
    }
  }
  return { tags, text };
}

/** Every element the report draws with; anything else in the page came from somewhere else. */
const REPORT_ELEMENTS = new Set(
  'html head meta link title style body main header h1 h2 span p b section div dl dt dd figure figcaption svg g line text path rect table thead tbody tr th td footer'.split(
    ' ',
  ),
);

// ---------------------------------------------------------------------------------------------

describe('report aggregation', () => {
  it('computes p50, p90 and p99 of the latencies it was given', () => {
    const aggregate = new RunAggregate();
    // 1..1000 ms in a shuffled order: p50 = 500 ms, p90 = 900 ms, p99 = 990 ms.
    const random = seeded(1);
    const order = Array.from({ length: 1000 }, (_, i) => i + 1).sort(() => random() - 0.5);
    for (const ms of order) aggregate.add(entry(ms, { ms }));
    // HDR keeps three significant digits: within 0.1%.
    for (const [q, expected] of [
      [50, 500_000],
      [90, 900_000],
      [99, 990_000],
      [100, 1_000_000],
    ] as const) {
      const got = aggregate.latency.percentile(q);
      assert.ok(Math.abs(got - expected) <= expected / 1000, `p${q}: got ${got} µs`);
    }
    assert.equal(aggregate.latency.count, 1000);
  });

  it('writes the percentiles on the page', () => {
    const report = createReport(CONFIG, 0);
    for (let ms = 1; ms <= 100; ms++) report.add(entry(ms, { ms }));
    report.finish(2000, false);
    const { text } = parseHtml(report.render());
    assert.match(text, /p50 50 ms/);
    assert.match(text, /p90 90 ms/);
    assert.match(text, /p99 99 ms/);
    assert.match(text, /max 100 ms/);
  });

  it('doubles the bucket width when a run outgrows its buckets, keeping the sums exact', () => {
    const timeline = new Timeline(1, 1);
    timeline.addSpan(0, 0, 599.5);
    assert.equal(timeline.width, 1);
    assert.equal(timeline.length, 600);
    // One millisecond past the end of 600 one-millisecond buckets: the width doubles.
    timeline.addSpan(0, 600, 601);
    assert.equal(timeline.width, 2);
    assert.equal(timeline.length, 301);
    assert.deepEqual([...timeline.values(0).slice(0, 3)], [2, 2, 2]);
    // Much further: doubled as often as needed, never more than MAX_BUCKETS buckets.
    timeline.addSpan(0, 10_000, 100_000);
    assert.equal(timeline.width, 256);
    assert.ok(timeline.length <= MAX_BUCKETS);
    const total = timeline.values(0).reduce((sum, v) => sum + v, 0);
    assert.equal(total, 599.5 + 1 + 90_000);
  });

  it('counts starts per second in one-second buckets, and doubles them for a long run', () => {
    const aggregate = new RunAggregate();
    // 10 starts a second for 20 minutes, each with a retry 50 ms later.
    for (let i = 0; i < 12_000; i++) {
      const start = i * 100;
      aggregate.add(entry(i, { start, attemptStarts: [start, start + 50], attempts: 2, ms: 20 }));
    }
    assert.equal(aggregate.starts.width, 2000);
    assert.equal(aggregate.starts.length, 600);
    assert.ok(aggregate.starts.values(0).every((count) => count === 20));
    assert.ok(aggregate.starts.values(1).every((count) => count === 20));
  });

  it('measures in flight as the mean number of requests over each bucket', () => {
    const report = createReport({ ...CONFIG, concurrency: 4 }, 0);
    // Four requests in flight for the first second, then two for 198 ms: 2 ms buckets.
    for (let i = 0; i < 4; i++) report.add(entry(i, { start: 0, ms: 1000 }));
    for (let i = 4; i < 6; i++) report.add(entry(i, { start: 1000, ms: 198 }));
    report.finish(1198, false);
    const html = report.render();
    assert.match(parseHtml(html).text, /in flight, peak4mean per 2 ms · limit 4/);
    assert.match(html, /<title>0\.000–0\.002 s: 4 in flight \(mean\)<\/title>/);
    assert.match(html, /<title>1\.000–1\.002 s: 2 in flight \(mean\)<\/title>/);
    assert.match(html, /<title>1\.196–1\.198 s: 2 in flight \(mean\)<\/title>/);
  });

  it('plots an adaptive limit over time beside the in-flight count, as its mean per bucket', () => {
    const config: RunConfig = {
      ...CONFIG,
      concurrency: 256,
      adaptive: { algorithm: 'vegas', max: 256 },
    };
    const report = createReport(config, 0);
    // The limit is 4 for the first 600 ms, then 8; two requests run the whole second.
    report.limit?.(0, 4);
    report.limit?.(600, 8);
    for (let i = 0; i < 2; i++) report.add(entry(i, { start: 0, ms: 1000 }));
    report.finish(1000, false);
    const html = report.render();
    const { text } = parseHtml(html);
    assert.match(text, /concurrencyauto \(vegas, at most 256\)/);
    assert.match(text, /limit auto/);
    // 2 ms buckets: the bucket across the change holds its mean, and the last one the new limit.
    assert.match(html, /<title>0\.000–0\.002 s: 2 in flight \(mean\), limit 4<\/title>/);
    assert.match(html, /<title>0\.598–0\.600 s: 2 in flight \(mean\), limit 4<\/title>/);
    assert.match(html, /<title>0\.998–1\.000 s: 2 in flight \(mean\), limit 8<\/title>/);
    assert.match(html, /<path class="limit-line" d="M/);
    assert.doesNotMatch(html, /concurrency limit 256/, 'no fixed limit line at the ceiling');
  });

  it('keeps the 20 slowest requests, slowest first', () => {
    const aggregate = new RunAggregate();
    const random = seeded(2);
    const order = Array.from({ length: 5000 }, (_, i) => i).sort(() => random() - 0.5);
    for (const i of order) aggregate.add(entry(i, { ms: i }));
    const slowest = aggregate.slowest.sorted();
    assert.equal(slowest.length, SLOWEST);
    assert.deepEqual(
      slowest.map((request) => request.index),
      Array.from({ length: SLOWEST }, (_, i) => 4999 - i),
    );
  });

  it('keeps the first 200 failures and counts the rest', () => {
    const aggregate = new RunAggregate();
    for (let i = 0; i < 1000; i++) {
      aggregate.add(entry(i, { ok: i % 2 === 0, status: i % 2 === 0 ? 200 : 500, error: 'boom' }));
    }
    assert.equal(aggregate.failed, 500);
    assert.equal(aggregate.failures.length, FAILURES);
    assert.equal(aggregate.failures[0]!.index, 1);
    assert.equal(aggregate.failuresNotKept, 300);
    const report = createReport(CONFIG, 0);
    for (let i = 0; i < 250; i++) report.add(entry(i, { ok: false, status: 503 }));
    assert.match(parseHtml(report.render()).text, /first 200 failures are listed; 50 more are not/);
  });

  it('counts outcomes, statuses, exit codes, retries and retried statuses', () => {
    const aggregate = new RunAggregate();
    aggregate.add(entry(0));
    aggregate.add(entry(1, { status: 404, ok: false }));
    aggregate.add(entry(2, { status: undefined, ok: false, error: 'ECONNRESET' }));
    aggregate.add(
      entry(3, {
        attempts: 4,
        attemptStarts: [0, 100, 200, 300],
        retriedStatuses: [429, 429],
      }),
    );
    aggregate.add(entry(4, { skipped: 'cancelled', ok: false }));
    aggregate.add({
      ...entry(5, { skipped: 'not run', ok: false, attempts: 0 }),
      start: undefined,
    });
    // Carried over from an earlier run (--resume): counted, but it did not start in this one.
    aggregate.add({ ...entry(6), start: undefined, attemptStarts: [] });
    assert.deepEqual(
      [aggregate.total, aggregate.ok, aggregate.failed, aggregate.cancelled, aggregate.notRun],
      [7, 3, 2, 1, 1],
    );
    assert.equal(aggregate.started, 5);
    assert.deepEqual(
      [...aggregate.statuses.counts],
      [
        [200, 3],
        [404, 1],
        [-1, 1],
      ],
    );
    assert.deepEqual(
      [aggregate.retries, aggregate.retried, aggregate.retriedWithoutStatus],
      [3, 1, 1],
    );
    assert.deepEqual([...aggregate.retriedStatuses.counts], [[429, 2]]);

    const exec = createReport({ ...CONFIG, command: 'exec' }, 0);
    exec.add(entry(0, { target: 'make -j4', status: 0 }));
    exec.add(entry(1, { target: 'make test', status: 2, ok: false }));
    const { text } = parseHtml(exec.render());
    assert.match(text, /Exit codes/);
    assert.match(text, /exit 2/);
  });

  it('says when the run was interrupted, and what was cancelled or never ran', () => {
    const report = createReport(CONFIG, 0);
    report.add(entry(0));
    report.add(entry(1, { skipped: 'cancelled', ok: false }));
    report.add({ ...entry(2, { skipped: 'not run', ok: false }), start: undefined });
    report.finish(300, true);
    const { text } = parseHtml(report.render());
    assert.match(text, /Interrupted\. 1 request in flight was cancelled and 1 never started\./);
  });

  it('draws a page with every chart for a run in which nothing ran', () => {
    const report = createReport(CONFIG, Date.now());
    report.finish(0, false);
    const { tags, text } = parseHtml(report.render());
    const charts = tags.filter((tag) => tag.name === 'svg').map((tag) => tag.attributes.get('id'));
    assert.deepEqual(charts, [
      'chart-in-flight',
      'chart-starts',
      'chart-latency',
      'chart-statuses',
    ]);
    assert.match(text, /no request ran/);
    assert.match(text, /None failed\./);
  });

  it('stays bounded over a million entries: in memory and in page size', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const random = seeded(3);
    const report = createReport({ ...CONFIG, concurrency: 64, rates: ['1000/s'] }, Date.now());
    const feed = (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const start = i;
        const ms = 1 + random() * 200;
        const failed = random() < 0.05;
        const retried = random() < 0.02;
        report.add({
          index: i,
          target: `https://api.example.test/items/${i}?q=${'x'.repeat(100)}`,
          status: failed ? 500 + (i % 4) : 200,
          ok: !failed,
          attempts: retried ? 2 : 1,
          attemptStarts: retried ? [start - 500, start] : [start],
          start,
          end: start + ms,
          ms,
          bytes: 1000,
          error: failed ? `upstream error on item ${i}` : undefined,
          retriedStatuses: retried ? [429] : [],
        });
      }
    };
    feed(0, 10_000);
    const smallPage = report.render().length;
    gc();
    const before = process.memoryUsage().heapUsed;
    feed(10_000, 1_000_000);
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    // A million entries kept would be hundreds of megabytes; the aggregates are well under one.
    assert.ok(grown < 8 * 1024 * 1024, `heap grew by ${grown} bytes`);
    report.finish(1_000_200, false);
    const page = report.render();
    assert.ok(page.length < 512 * 1024, `page is ${page.length} characters`);
    assert.ok(page.length < smallPage * 2, `${page.length} vs ${smallPage} after 10,000 entries`);
    assert.match(parseHtml(page).text, /requests1,000,000/);
  });
});

describe('report escaping and redaction', () => {
  const HOSTILE = [
    `https://x.test/"><script>alert(1)</script><img src=x onerror=alert(2)>?a=1&b='2'`,
    `https://x.test/</td></tr></table><svg onload=alert(3)>`,
    `https://x.test/<!-- comment --><style>body{display:none}</style>`,
    `https://x.test/\u202egnp.exe\u0000`,
  ];

  it('escapes URLs, commands, errors and configured limits so that none can add an element or attribute', () => {
    for (const command of ['fetch', 'exec'] as const) {
      const report = createReport({ ...CONFIG, command, rates: ['5/s"><script>x</script>'] }, 0);
      HOSTILE.forEach((target, i) => {
        report.add(
          entry(i, { target, ok: false, status: 500, error: `bad <b onmouseover="x">${target}` }),
        );
      });
      // The slowest table too: a slow request with a hostile target.
      report.add(entry(9, { target: HOSTILE[0], ms: 99_999 }));
      report.finish(100_000, false);
      const html = report.render();
      const { tags, text } = parseHtml(html);
      for (const tag of tags) {
        assert.ok(REPORT_ELEMENTS.has(tag.name), `unexpected <${tag.name}>`);
        for (const [name, value] of tag.attributes) {
          assert.ok(!name.startsWith('on'), `event handler ${name} on <${tag.name}>`);
          if (name === 'href' || name === 'src') assert.equal(value, 'data:,');
        }
      }
      assert.equal(tags.filter((tag) => tag.name === 'style').length, 1);
      // The text reads back as given (with unprintable characters shown as U+FFFD).
      assert.ok(text.includes(HOSTILE[0]!));
      assert.ok(text.includes(HOSTILE[1]!));
      assert.ok(text.includes(HOSTILE[2]!));
      assert.ok(text.includes('https://x.test/\ufffdgnp.exe\ufffd'));
      assert.ok(text.includes(`bad <b onmouseover="x">${HOSTILE[1]!}`));
    }
  });

  it('escapes the five characters that matter in text and attributes', () => {
    assert.equal(
      escapeHtml(`<a href="x" title='y'>&amp;</a>`),
      '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;',
    );
  });

  it('redacts credential headers, curl credential options and URL userinfo', () => {
    const cases: [string, string][] = [
      ['https://user:hunter2@api.test/x', 'https://[redacted]@api.test/x'],
      ['https://token@api.test/x', 'https://[redacted]@api.test/x'],
      ['https://u:p@ss@api.test/x?mail=a@b.test', 'https://[redacted]@api.test/x?mail=a@b.test'],
      ['redis://:s3cret@cache:6379', 'redis://[redacted]@cache:6379'],
      ['https://api.test/x?mail=a@b.test', 'https://api.test/x?mail=a@b.test'],
      [
        `curl -H 'Authorization: Bearer abc.def' https://x.test`,
        `curl -H 'Authorization: [redacted]' https://x.test`,
      ],
      [
        'curl -H "Proxy-Authorization: Basic dTpw" x',
        'curl -H "Proxy-Authorization: [redacted]" x',
      ],
      ['Cookie: sid=1; theme=dark', 'Cookie: [redacted]'],
      ['set-cookie: sid=2; HttpOnly\nnext line', 'set-cookie: [redacted]\nnext line'],
      [
        '{"authorization":"Bearer \\"q\\" x","accept":"*/*"}',
        '{"authorization":"[redacted]","accept":"*/*"}',
      ],
      ["{'Cookie': 'a=1'}", "{'Cookie': '[redacted]'}"],
      ['authorization header missing', 'authorization header missing'],
      [
        `curl --cookie 'sid=9' --oauth2-bearer=t0k x`,
        `curl --cookie '[redacted]' --oauth2-bearer=[redacted] x`,
      ],
      [
        'curl --user "me:pw" --proxy-user me:pw2 x',
        'curl --user "[redacted]" --proxy-user [redacted] x',
      ],
    ];
    for (const [input, expected] of cases) assert.equal(redactSecrets(input), expected, input);
  });

  it('never writes an Authorization, Cookie or URL credential into the page', () => {
    const secrets = ['hunter2', 'sk-live-123', 'sid=abc', 'p4ss', 'tok3n', 'dXNlcjpwYXNz'];
    const report = createReport({ ...CONFIG, command: 'exec' }, 0);
    const targets = [
      'https://deploy:hunter2@hooks.example.test/1',
      `curl -H 'Authorization: Bearer sk-live-123' https://api.test`,
      'curl --cookie "sid=abc" -H "Cookie: sid=abc" https://api.test',
      'https://admin:p4ss@host.test/' + 'y'.repeat(5000),
      'git clone https://tok3n@github.com/o/r',
    ];
    targets.forEach((target, i) => {
      report.add(
        entry(i, {
          target,
          ok: false,
          status: 1,
          ms: 10_000 + i,
          error: `request had Proxy-Authorization: Basic dXNlcjpwYXNz and failed for ${target}`,
        }),
      );
    });
    const html = report.render();
    for (const secret of secrets) {
      assert.ok(!html.includes(secret), `${secret} in the page`);
      assert.ok(!html.includes(escapeHtml(secret)), `${secret} (escaped) in the page`);
    }
    assert.ok(html.includes('[redacted]'));
  });
});

/** What the page says about itself, measured in the browser by {@link IN_PAGE}. */
interface InPage {
  charts: {
    id: string;
    width: number;
    height: number;
    /** Bars and areas with a non-empty box. */
    drawn: number;
    limits: number;
    markers: number;
  }[];
  dom: { forbidden: number; handlers: number; cells: string[] };
}

/** Runs in the page; a string, because this project's TypeScript has no DOM types. */
const IN_PAGE = `(() => {
  const visible = (element) => {
    const box = element.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };
  const charts = [...document.querySelectorAll('svg.chart')].map((svg) => {
    const box = svg.getBoundingClientRect();
    const shapes = svg.querySelectorAll(
      'rect.bar, rect.bar-fail, rect.bar-retry, rect[class^="st-"], path.area',
    );
    return {
      id: svg.id,
      width: box.width,
      height: box.height,
      drawn: [...shapes].filter(visible).length,
      limits: svg.querySelectorAll('line.limit').length,
      markers: svg.querySelectorAll('line.marker').length,
    };
  });
  const elements = [...document.querySelectorAll('*')];
  const dom = {
    forbidden: document.querySelectorAll('script, img, iframe, object, embed').length,
    handlers: elements.filter((element) =>
      [...element.attributes].some((attribute) => attribute.name.startsWith('on')),
    ).length,
    cells: [...document.querySelectorAll('td.target')].map((td) => td.textContent),
  };
  return { charts, dom };
})()`;

const CHROMIUM = '/usr/bin/chromium';
/** Set by CI systems (`CI=true`) and by .ci/run. */
const inCi = !['', '0', 'false', undefined].includes(process.env.CI);
const chromiumMissing = !existsSync(CHROMIUM);

describe('report in a browser', () => {
  it(
    'opens in headless Chromium with its charts drawn, no script error and no network request',
    {
      timeout: 60_000,
      skip:
        chromiumMissing && !inCi
          ? `SKIPPED: no Chromium at ${CHROMIUM} (install Debian's chromium to run it; in CI this test fails instead)`
          : false,
    },
    async () => {
      assert.ok(!chromiumMissing, `Chromium is required at ${CHROMIUM} when CI is set`);
      const { chromium } = await import('playwright-core');
      const dir = mkdtempSync(join(tmpdir(), 'sluice-report-'));
      try {
        const random = seeded(4);
        const report = createReport({ ...CONFIG, rates: ['20/s'], concurrency: 6 }, Date.now());
        for (let i = 0; i < 400; i++) {
          const start = i * 50;
          const ms = 20 + random() * 300;
          const retried = i % 25 === 0;
          const failed = i % 40 === 7;
          report.add(
            entry(i, {
              target: i === 7 ? `${HOSTILE_URL}&i=${i}` : `https://api.example.test/items/${i}`,
              start,
              ms,
              end: start + ms + (retried ? 400 : 0),
              attempts: retried ? 2 : 1,
              attemptStarts: retried ? [start, start + 400] : [start],
              retriedStatuses: retried ? [429] : [],
              ok: !failed,
              status: failed ? 503 : 200,
              error: failed ? `upstream said <b>no</b> & "retry"` : undefined,
            }),
          );
        }
        report.finish(20_400, false);
        const file = join(dir, 'run.html');
        writeFileSync(file, report.render());
        const fileUrl = pathToFileURL(file).href;

        const context = await chromium.launchPersistentContext(join(dir, 'profile'), {
          executablePath: CHROMIUM,
          headless: true,
          args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-quic',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
          ],
        });
        try {
          const requests: string[] = [];
          const errors: string[] = [];
          context.on('request', (request) => requests.push(request.url()));
          await context.route('**/*', (route) =>
            route.request().url() === fileUrl ? route.continue() : route.abort(),
          );
          const page = context.pages()[0] ?? (await context.newPage());
          page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
          page.on('console', (message) => {
            if (message.type() === 'error' || message.type() === 'warning') {
              errors.push(`console ${message.type()}: ${message.text()}`);
            }
          });
          await page.goto(fileUrl, { waitUntil: 'load' });

          const { charts, dom } = await page.evaluate<InPage>(IN_PAGE);
          assert.deepEqual(
            charts.map((chart) => chart.id),
            ['chart-in-flight', 'chart-starts', 'chart-latency', 'chart-statuses', 'chart-retries'],
          );
          for (const chart of charts) {
            assert.ok(
              chart.width > 300 && chart.height > 40,
              `${chart.id} is ${chart.width}×${chart.height}`,
            );
            assert.ok(chart.drawn > 0, `${chart.id} has nothing drawn`);
          }
          assert.equal(charts[0]!.limits, 1, 'the concurrency limit is drawn');
          assert.equal(charts[1]!.limits, 1, 'the configured rate is drawn');
          assert.equal(charts[2]!.markers, 3, 'p50, p90 and p99 are marked');
          assert.ok(charts[1]!.drawn >= 20, 'a bar for each second');

          // Parsed by the browser itself: the hostile URL is text, not markup.
          assert.equal(dom.forbidden, 0);
          assert.equal(dom.handlers, 0);
          assert.ok(dom.cells.includes(`${HOSTILE_URL}&i=7`));

          assert.deepEqual(requests, [fileUrl], 'no request but the page itself');
          assert.deepEqual(errors, [], 'no script error, no console error');
        } finally {
          await context.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
