/**
 * One measurement in a fresh process: `node --expose-gc bench/child.mjs <group> '<params json>'`.
 * Loads bench/cases/<group>.mjs, calls its `measure(params)`, and prints the result as one JSON
 * line on stdout (the orchestrator reads the last line, so a library that logs does no harm).
 *
 * A fresh process per measurement, because a limiter measured after another inherits its heap,
 * its garbage and the JIT's feedback for shared call sites, and the order would pick the winner.
 */
const [group, json] = process.argv.slice(2);

if (group === undefined || !/^[a-z0-9-]+$/.test(group) || json === undefined) {
  process.stderr.write('usage: node --expose-gc bench/child.mjs <group> <params-json>\n');
  process.exit(2);
}

const { measure } = await import(`./cases/${group}.mjs`);
const result = await measure(JSON.parse(json));
// Exit once the line is out: some measurements leave work pending on purpose (a blocker that
// never settles), and a peer's stray timer must not hold the process until the timeout.
process.stdout.write(`${JSON.stringify(result)}\n`, () => {
  process.exit(0);
});
