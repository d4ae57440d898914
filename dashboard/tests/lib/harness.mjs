// Test harness of the browser tests: a private nats-server locked down with the users of
// scripts/nats-auth.sh (as make dev and compose run it), a fresh database in the shared test
// PostgreSQL, the orchestrator serving the built dashboard with two API keys, a small stack, and
// a headless Chromium. Everything started here is stopped by stop(), also when a test fails, and
// killed on process exit as a last resort.
//
// Environment: ORCH_TEST_DATABASE_URL (required), ORCH_NATS_SERVER (required), ORCH_BIN
// (default <repo>/target/debug/orchestrator), ORCH_CHROMIUM (default /usr/bin/chromium).

import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const DASHBOARD = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const REPO = resolve(DASHBOARD, '..');

/** The launch options of Chromium: headless, no sandbox (root in CI), nothing from the network. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * A stack with edges and a critical chain: db → migrate (one-shot) → api → worker, plus cache,
 * and web: two replicas (web-0, web-1) that ask for resources, placed on the embedded agent's node.
 */
export const STACK_TOML = `
max_parallel = 4

[services.db]
command = "/bin/sleep"
args = ["3600"]
priority = 90
grace_period = "2s"

[services.cache]
command = "/bin/sleep"
args = ["3600"]
priority = 60
grace_period = "2s"

[services.migrate]
command = "/bin/sh"
args = ["-c", "sleep 0.4"]
restart = { policy = "never" }
depends_on = { db = "started" }

[services.api]
command = "/bin/sleep"
args = ["3600"]
depends_on = { migrate = "completed", cache = { condition = "started", required = false } }
grace_period = "2s"

[services.worker]
command = "/bin/sleep"
args = ["3600"]
priority = 30
depends_on = { api = "started" }
grace_period = "2s"

[services.web]
command = "/bin/sleep"
args = ["3600"]
count = 2
resources = { cpu = 100, memory = 32 }
grace_period = "2s"
`;
export const STACK_SERVICES = ['api', 'cache', 'db', 'migrate', 'web-0', 'web-1', 'worker'];
export const STACK_EDGES = 4;

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (scripts/browser-test.sh sets it)`);
  return v;
}

export async function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

function portOpen(port) {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('connect', () => {
      s.destroy();
      res(true);
    });
    s.on('error', () => res(false));
  });
}

function tail(file, lines = 40) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Waits for cond() to return a truthy value, polling; throws with `what` after `ms`. */
export async function waitFor(what, cond, ms = 30_000, every = 100) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(every);
  }
}

const children = new Set();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function start(cmd, args, logFile) {
  const log = createWriteStream(logFile);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

async function stopChild(child, name, graceMs) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((res) => child.once('exit', res));
  child.kill('SIGTERM');
  const done = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done) {
    process.stderr.write(`harness: ${name} did not stop within ${graceMs} ms; SIGKILL\n`);
    child.kill('SIGKILL');
    await exited;
  }
}

function psql(url, sql) {
  execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', url, '-c', sql], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A client of the orchestrator's HTTP API. */
export function client(base, token) {
  return async function api(method, path, body, { contentType = 'application/json' } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      headers['Content-Type'] = contentType;
      payload = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const res = await fetch(`${base}${path}`, { method, headers, body: payload });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: res.status, body: json, text };
  };
}

/**
 * Starts nats-server, a fresh database and the orchestrator. Returns the environment with
 * base, tokens, api clients and stop().
 */
export async function startEnvironment() {
  const dbUrl = need('ORCH_TEST_DATABASE_URL');
  const natsBin = need('ORCH_NATS_SERVER');
  const orchBin = process.env.ORCH_BIN || join(REPO, 'target', 'debug', 'orchestrator');
  for (const [what, p] of [
    ['ORCH_NATS_SERVER', natsBin],
    ['ORCH_BIN', orchBin],
    ['orch-sleeper (built with the orchestrator)', join(dirname(orchBin), 'orch-sleeper')],
    ['the built dashboard (scripts/dashboard.sh)', join(DASHBOARD, 'dist', 'index.html')],
  ]) {
    if (!existsSync(p)) throw new Error(`${what}: ${p} does not exist`);
  }
  const tmp = mkdtempSync(join(tmpdir(), 'orch-dashboard-test-'));
  const id = randomBytes(4).toString('hex');
  const env = {
    tmp,
    prefix: `dash${id}`,
    adminToken: `adm-${randomBytes(16).toString('hex')}`,
    viewerToken: `vw-${randomBytes(16).toString('hex')}`,
    nats: null,
    orch: null,
    database: null,
    /** A stand-in service (orchestrator/src/bin/orch-sleeper.rs), built beside the orchestrator. */
    sleeper: join(dirname(orchBin), 'orch-sleeper'),
  };
  const stop = async () => {
    if (env.orch && env.base) {
      // Stop the managed services first (reverse dependency order), then the orchestrator.
      try {
        await Promise.race([client(env.base, env.adminToken)('DELETE', '/api/v1/stack'), sleep(15_000)]);
      } catch {
        /* the orchestrator may be gone already */
      }
    }
    await stopChild(env.orch, 'orchestrator', 20_000);
    // Managed services outlive the orchestrator: whatever a failed test left running goes.
    try {
      execFileSync(orchBin, ['agent', '--cleanup', '--log', 'warn', '--log-dir', join(tmp, 'agent-logs')], {
        stdio: 'ignore',
        timeout: 30_000,
      });
    } catch (e) {
      process.stderr.write(`harness: orchestrator agent --cleanup failed: ${e.message}\n`);
    }
    await stopChild(env.nats, 'nats-server', 10_000);
    if (env.database) {
      try {
        psql(dbUrl, `DROP DATABASE IF EXISTS ${env.database} WITH (FORCE)`);
      } catch (e) {
        process.stderr.write(`harness: could not drop database ${env.database}: ${e.message}\n`);
      }
    }
    if (process.env.ORCH_KEEP_TEST_DIR !== '1') rmSync(tmp, { recursive: true, force: true });
    else process.stderr.write(`harness: logs kept in ${tmp}\n`);
  };
  env.stop = stop;
  try {
    const natsPort = await freePort();
    // The users of every role for this prefix; anonymous clients are refused.
    const auth = join(tmp, 'nats-auth');
    execFileSync('sh', [join(REPO, 'scripts', 'nats-auth.sh'), auth, `127.0.0.1:${natsPort}`], {
      env: { ...process.env, PREFIX: env.prefix },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    // JetStream's file store limit set explicitly: left unset it is 75% of the disk space free at
    // start, and the orchestrator's streams reserve their max_bytes from it, so on a machine with
    // little free disk they would not fit. The tests write a few megabytes.
    writeFileSync(join(auth, 'test-nats.conf'), 'jetstream {\n  max_file_store: 1TB\n}\ninclude ./nats-auth.conf\n');
    env.nats = start(
      natsBin,
      ['-c', join(auth, 'test-nats.conf'), '-js', '-a', '127.0.0.1', '-p', String(natsPort), '-sd', join(tmp, 'jetstream')],
      join(tmp, 'nats.log'),
    );
    await waitFor('nats-server to listen', async () => {
      if (env.nats.exitCode !== null) throw new Error(`nats-server exited:\n${tail(join(tmp, 'nats.log'))}`);
      return portOpen(natsPort);
    }, 30_000);

    env.database = `orch_dashboard_${id}`;
    psql(dbUrl, `CREATE DATABASE ${env.database}`);
    const u = new URL(dbUrl);
    u.pathname = `/${env.database}`;

    const httpPort = await freePort();
    env.base = `http://127.0.0.1:${httpPort}`;
    const args = [
      'serve',
      '--nats-url', `nats://127.0.0.1:${natsPort}`,
      '--config', join(auth, 'orchestrator.toml'),
      '--database-url', u.toString(),
      '--http-addr', `127.0.0.1:${httpPort}`,
      '--subject-prefix', env.prefix,
      '--dashboard-dir', join(DASHBOARD, 'dist'),
      '--api-key', `admin:test-admin:${env.adminToken}`,
      '--api-key', `viewer:test-viewer:${env.viewerToken}`,
      '--agent-log-dir', join(tmp, 'agent-logs'),
      // A label of the embedded agent's node, which the Nodes view shows.
      '--label', 'disk=ssd',
      '--log-format', 'json',
    ];
    let runs = 0;
    const launch = async (extra) => {
      const logFile = join(tmp, `orchestrator-${++runs}.log`);
      env.orchLog = logFile;
      env.orch = start(orchBin, [...args, ...extra], logFile);
      const child = env.orch;
      await waitFor('the orchestrator to be ready (GET /readyz)', async () => {
        if (child.exitCode !== null) throw new Error(`the orchestrator exited (${child.exitCode}):\n${tail(logFile)}`);
        const res = await fetch(`${env.base}/readyz`).catch(() => null);
        return res?.status === 200;
      }, 60_000, 200);
    };
    /** Stops the orchestrator (SIGTERM, as an operator would) and starts it again with extra flags. */
    env.restart = async (extra = []) => {
      await stopChild(env.orch, 'orchestrator', 20_000);
      await launch(extra);
    };
    await launch([]);
  } catch (e) {
    await stop();
    throw e;
  }
  const help = execFileSync(orchBin, ['serve', '--help'], { encoding: 'utf8' });
  /** Whether this build of the orchestrator has a command-line flag. */
  env.supports = (flag) => help.includes(flag);
  env.admin = client(env.base, env.adminToken);
  env.viewer = client(env.base, env.viewerToken);
  return env;
}

/** Applies STACK_TOML and waits until its start-up run has finished. Returns the profile. */
export async function applyStack(env) {
  const res = await env.admin('PUT', '/api/v1/stack?source=browser-test', STACK_TOML, { contentType: 'application/toml' });
  if (res.status !== 202) throw new Error(`PUT /api/v1/stack answered ${res.status}: ${res.text}`);
  return waitFor('the start-up run to finish', async () => {
    const p = await env.admin('GET', '/api/v1/stack/profile');
    return p.status === 200 && p.body.finished && p.body.run_id === res.body.run_id ? p.body : null;
  }, 60_000, 200);
}

/** Launches headless Chromium (Playwright creates and removes a fresh temporary profile). */
export async function launchBrowser(chromium) {
  const executablePath = process.env.ORCH_CHROMIUM || '/usr/bin/chromium';
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
}

/**
 * Opens the dashboard in a fresh browser context with `#token=<token>` and records console
 * errors and uncaught page errors for the whole life of the page.
 */
export async function openDashboard(browser, env, token, path = '/', setup = null) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const page = await context.newPage();
  // Awaited: routes set up here must be in place before the page's first request.
  if (setup) await setup(page);
  const problems = { console: [], page: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') {
      problems.console.push({ type: msg.type(), text: msg.text(), url: msg.location()?.url ?? '' });
    }
  });
  page.on('pageerror', (err) => problems.page.push(String(err?.stack ?? err)));
  await page.goto(`${env.base}${path}${token ? `#token=${encodeURIComponent(token)}` : ''}`);
  return { context, page, problems };
}


/**
 * A TCP proxy to 127.0.0.1:port. pause() stops it reading from the server, so that the server's
 * socket buffers fill and its sends block, as with a client that stopped reading. Returns
 * { base, pause, resume, close }.
 */
export async function startProxy(port) {
  const pairs = new Set();
  let paused = false;
  const server = createServer((down) => {
    const up = connect({ host: '127.0.0.1', port });
    const pair = { up, down };
    pairs.add(pair);
    up.on('data', (d) => {
      if (!down.write(d)) {
        up.pause();
        down.once('drain', () => paused || up.resume());
      }
    });
    down.on('data', (d) => up.write(d));
    // An end is passed on as an end, after what is still queued: destroying the other side
    // instead would discard the last bytes (the server's final frames are sent just before it
    // closes), which a real network path never does.
    up.on('end', () => down.end());
    down.on('end', () => up.end());
    // A reset (or a refused connection while the orchestrator restarts) is passed on as one.
    const reset = () => {
      up.destroy();
      down.destroy();
    };
    for (const s of [up, down]) {
      s.on('error', reset);
      s.on('close', () => up.destroyed && down.destroyed && pairs.delete(pair));
    }
    if (paused) up.pause();
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    pause() {
      paused = true;
      for (const p of pairs) p.up.pause();
    },
    resume() {
      paused = false;
      for (const p of pairs) p.up.resume();
    },
    async close() {
      for (const p of pairs) {
        p.up.destroy();
        p.down.destroy();
      }
      await new Promise((res) => server.close(res));
    },
  };
}
