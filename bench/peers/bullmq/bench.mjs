// BullMQ peer of wk_bench (bench/bench.cpp): the same figures, measured the same way.
//
//   node bench.mjs [--host H] [--port P] [--db N] [--tasks N] [--latency-samples N] [--json]
//                  (or env WK_BENCH_REDIS_HOST / WK_BENCH_REDIS_PORT / WK_BENCH_TASKS)
//
// For concurrency 4, 8 and 16, each on a fresh queue: enqueue N no-op jobs (addBulk, outside the
// measured window), drain them with one in-process Worker, and report jobs/s, CPU seconds per
// 100k jobs of this node process (process.cpuUsage: user + system, all threads) and of
// redis-server (its pid from INFO server, utime + stime from /proc/<pid>/stat). The window ends
// when the processor has run N times and the queue's active list is empty (the last completions
// are written), as in wk_bench. Then the idle pickup latency (add one job to an idle queue whose
// Worker waits in Redis, time until the processor starts) and the peak RSS
// (process.resourceUsage().maxRSS). Jobs are removed on completion (removeOnComplete), as asynq
// deletes a task that succeeds without retention.
// The DB given is FLUSHed: point it at a private redis (bench/run.sh --peers starts one).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, Worker } from 'bullmq';

const bullmqVersion = JSON.parse(
  readFileSync(new URL('./node_modules/bullmq/package.json', import.meta.url), 'utf8'),
).version;

function parse(argv) {
  const o = {
    host: process.env.WK_BENCH_REDIS_HOST ?? '127.0.0.1',
    port: Number(process.env.WK_BENCH_REDIS_PORT ?? 6379),
    db: 0,
    tasks: Number(process.env.WK_BENCH_TASKS ?? 100000),
    latencySamples: 200,
    json: false,
  };
  for (let i = 0; i < argv.length; ++i) {
    const flag = argv[i];
    if (flag === '--json') {
      o.json = true;
      continue;
    }
    const value = argv[++i];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    if (flag === '--host') o.host = value;
    else if (flag === '--port') o.port = Number(value);
    else if (flag === '--db') o.db = Number(value);
    else if (flag === '--tasks') o.tasks = Number(value);
    else if (flag === '--latency-samples') o.latencySamples = Number(value);
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!(o.tasks > 0) || !(o.latencySamples > 0) || !Number.isInteger(o.tasks)) {
    throw new Error('--tasks and --latency-samples must be > 0');
  }
  return o;
}

const clockTicks = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

// utime + stime of a process, from /proc/<pid>/stat; -1 when unreadable (redis on another host).
function pidCpuSeconds(pid) {
  let line;
  try {
    line = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return -1;
  }
  const fields = line.slice(line.lastIndexOf(')') + 2).trim().split(/\s+/);  // name may have spaces
  if (fields.length < 13) return -1;
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;  // fields 14 and 15 of stat
}

function processCpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// Counts processor calls; lets main wait for a target without a wake-up per job.
class Counter {
  count = 0;
  lastStart = 0;
  #target = -1;
  #resolve = null;
  hit() {
    this.lastStart = performance.now();
    if (++this.count === this.#target) this.#resolve();
  }
  waitFor(target) {
    if (this.count >= target) return Promise.resolve();
    return new Promise((resolve) => {
      this.#target = target;
      this.#resolve = resolve;
    });
  }
}

const opt = parse(process.argv.slice(2));
const connection = { host: opt.host, port: opt.port, db: opt.db, maxRetriesPerRequest: null };
const jobOpts = { removeOnComplete: true, removeOnFail: true };
const enqueueBatch = 1000;

const out = (row) => {
  if (opt.json) console.log(JSON.stringify({ impl: 'bullmq', version: bullmqVersion, ...row }));
};

async function main() {
  const admin = new Queue('bench-admin', { connection });
  const adminClient = await admin.client;
  const info = await adminClient.info('server');
  const pidMatch = /process_id:(\d+)/.exec(info);
  const rpid = pidMatch ? Number(pidMatch[1]) : -1;

  if (!opt.json) {
    console.log(`bullmq ${bullmqVersion}, node ${process.version}, tasks per run: ${opt.tasks}, ` +
                `redis ${opt.host}:${opt.port} (pid ${rpid})\n`);
    console.log(`${'concurrency'.padEnd(12)} ${'tasks/s'.padStart(12)} ` +
                `${'host CPU s/100k'.padStart(18)} ${'redis CPU s/100k'.padStart(18)}`);
  }
  for (const concurrency of [4, 8, 16]) {
    await adminClient.flushdb();
    const name = `bench-c${concurrency}`;
    const queue = new Queue(name, { connection });
    for (let i = 0; i < opt.tasks; i += enqueueBatch) {
      const n = Math.min(enqueueBatch, opt.tasks - i);
      await queue.addBulk(Array.from({ length: n }, () => ({ name: 'noop', data: {}, opts: jobOpts })));
    }
    const counter = new Counter();
    const worker = new Worker(name, async () => counter.hit(), { connection, concurrency, autorun: false });
    worker.on('error', (e) => console.error(`bullmq worker: ${e.message}`));
    await worker.waitUntilReady();
    const cpu0 = processCpuSeconds();
    const rcpu0 = pidCpuSeconds(rpid);
    const t0 = performance.now();
    const running = worker.run();
    await counter.waitFor(opt.tasks);
    // Wait until the last completions are written too (bounded: 60 s).
    for (let i = 0; i < 60000 && (await adminClient.llen(`bull:${name}:active`)) > 0; ++i) await sleep(1);
    const secs = (performance.now() - t0) / 1000;
    const cpu = processCpuSeconds() - cpu0;
    const rcpu = rcpu0 < 0 ? -1 : pidCpuSeconds(rpid) - rcpu0;
    await worker.close();
    await running;
    await queue.close();
    const per100k = 100000 / opt.tasks;
    const row = {
      kind: 'drain',
      concurrency,
      tasks: opt.tasks,
      tasks_per_s: opt.tasks / secs,
      host_cpu_s_per_100k: cpu * per100k,
      redis_cpu_s_per_100k: rcpu < 0 ? -1 : rcpu * per100k,
    };
    out(row);
    if (!opt.json) {
      console.log(`${String(concurrency).padEnd(12)} ${row.tasks_per_s.toFixed(0).padStart(12)} ` +
                  `${row.host_cpu_s_per_100k.toFixed(2).padStart(18)} ` +
                  `${row.redis_cpu_s_per_100k.toFixed(2).padStart(18)}`);
    }
  }

  // Idle pickup: the Worker waits in Redis (BZPOPMIN on the queue's marker); each sample adds one
  // job to the empty queue.
  await adminClient.flushdb();
  const queue = new Queue('bench-idle', { connection });
  const counter = new Counter();
  const worker = new Worker('bench-idle', async () => counter.hit(), { connection, concurrency: 4 });
  worker.on('error', (e) => console.error(`bullmq worker: ${e.message}`));
  await worker.waitUntilReady();
  const latencies = [];
  for (let i = 0; i < opt.latencySamples; ++i) {
    await sleep(5);  // let the worker go idle (blocked in its wait) before the next sample
    const before = performance.now();
    await queue.add('noop', {}, jobOpts);
    await counter.waitFor(i + 1);
    latencies.push(counter.lastStart - before);
  }
  await worker.close();
  await queue.close();
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.floor(p * (latencies.length - 1))];
  const peakRssMib = process.resourceUsage().maxRSS / 1024;  // KiB on Linux
  out({ kind: 'idle', samples: opt.latencySamples, p50_ms: pct(0.5), p99_ms: pct(0.99),
        peak_rss_mib: peakRssMib });
  if (!opt.json) {
    console.log(`\nidle enqueue-to-start latency over ${opt.latencySamples} samples: ` +
                `p50 ${pct(0.5).toFixed(3)} ms, p99 ${pct(0.99).toFixed(3)} ms`);
    console.log(`peak RSS: ${peakRssMib.toFixed(1)} MiB`);
  }
  await admin.close();
}

main().catch((e) => {
  console.error(`bullmq bench: ${e.stack ?? e}`);
  process.exit(1);
});
