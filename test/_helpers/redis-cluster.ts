/**
 * A real Redis Cluster for the tests: three `redis-server --cluster-enabled yes` masters on free
 * ports of 127.0.0.1 (test/_helpers/redis.ts), joined with `redis-cli --cluster create` (no
 * replicas), ready once every node says `cluster_state:ok`. Each node keeps its cluster config in
 * its own directory, removed with it.
 *
 * Where `redis-server` or `redis-cli` is missing, the tests that need a Cluster are skipped, except
 * in CI (`CI=true`), where they fail: Debian's `redis-server` package brings `redis-tools`.
 */
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { redisInstalled, RedisServer } from './redis.ts';

const run = promisify(execFile);

/** Whether `redis-cli` can be run here. */
export const redisCliInstalled: boolean =
  spawnSync('redis-cli', ['--version'], { stdio: 'ignore' }).status === 0;

/** What a test that needs a Redis Cluster passes to `it()` / `describe()` (as `needsRedis`). */
export const needsRedisCluster: { skip: string | false } = {
  skip:
    (redisInstalled && redisCliInstalled) || process.env.CI === 'true'
      ? false
      : 'redis-server or redis-cli is not installed',
};

/** Runs `redis-cli -p port <args>` and resolves to its output, trimmed. */
export async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args]);
  return stdout.trim();
}

/** A 3-master Redis Cluster of a test's own. */
export class RedisCluster {
  readonly nodes: readonly RedisServer[];

  private constructor(nodes: readonly RedisServer[]) {
    this.nodes = nodes;
  }

  /** Starts `masters` nodes, joins them, and resolves once the cluster is `ok` on every node. */
  static async start(masters = 3): Promise<RedisCluster> {
    const started = await Promise.allSettled(
      Array.from({ length: masters }, () =>
        RedisServer.start({
          args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'],
        }),
      ),
    );
    const nodes = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const cluster = new RedisCluster(nodes);
    try {
      const failed = started.find((s) => s.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      await run('redis-cli', [
        '--cluster',
        'create',
        ...nodes.map((node) => `127.0.0.1:${node.port}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ]);
      const deadline = Date.now() + 15_000;
      for (const node of nodes) {
        while (!(await cli(node.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok')) {
          if (Date.now() > deadline) throw new Error(`the cluster on ${node.port} is not ok`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** The nodes to start a client from: `{ host, port }` each. */
  get rootNodes(): { host: string; port: number }[] {
    return this.nodes.map((node) => ({ host: '127.0.0.1', port: node.port }));
  }

  /** The hash slot of `key` (CLUSTER KEYSLOT). */
  async slotOf(key: string): Promise<number> {
    return Number(await cli(this.nodes[0]!.port, 'CLUSTER', 'KEYSLOT', key));
  }

  /** The port of the master that serves `slot`, from CLUSTER NODES. */
  async ownerOf(slot: number): Promise<number> {
    for (const line of (await cli(this.nodes[0]!.port, 'CLUSTER', 'NODES')).split('\n')) {
      const [, address, flags, , , , , , ...ranges] = line.split(' ');
      if (!flags?.includes('master')) continue;
      for (const range of ranges) {
        const [from, to = from] = range.split('-').map(Number);
        if (from! <= slot && slot <= to!) return Number(address!.split(':')[1]!.split('@')[0]);
      }
    }
    throw new Error(`no master serves slot ${slot}`);
  }

  /** The keys matching `pattern` held by the node on `port`. */
  async keysOn(port: number, pattern: string): Promise<string[]> {
    const out = await cli(port, '--scan', '--pattern', pattern);
    return out === '' ? [] : out.split('\n');
  }

  /** Stops every node and removes their directories. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop()));
  }
}
