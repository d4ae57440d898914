// Browser tests of the dashboard against a real orchestrator (NATS JetStream, PostgreSQL, a
// managed stack), in headless Chromium. Run by scripts/browser-test.sh.

import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';

import { applyStack, launchBrowser, openDashboard, startEnvironment, startProxy, STACK_EDGES, STACK_SERVICES, STACK_TOML, waitFor } from './lib/harness.mjs';

const WAIT = 20_000;
const HOSTILE = '<img src=x onerror=window.__xss=1>';

let env;
let browser;
let profile;

/** Console errors and warnings, less the browser's own log lines for answers the test expects. */
function unexpected(problems, allowedStatuses = []) {
  return problems.console.filter(
    (m) => !allowedStatuses.some(([status, path]) => m.text.includes(`status of ${status}`) && m.url.endsWith(path)),
  );
}

async function textOf(locator) {
  return ((await locator.textContent()) ?? '').trim();
}

function suffix() {
  return randomBytes(3).toString('hex');
}

async function register(body) {
  const res = await env.admin('POST', '/api/v1/services', { address: '127.0.0.1', port: 9000, ttl_seconds: 3600, ...body });
  assert.ok([200, 201].includes(res.status), `POST /api/v1/services answered ${res.status}: ${res.text}`);
  return res.body.instance;
}

async function withPage(token, fn, path = '/', setup = null) {
  const opened = await openDashboard(browser, env, token, path, setup);
  try {
    await fn(opened);
  } finally {
    await opened.context.close();
  }
}

/** Waits until the dashboard shows its caller and its event stream is live. */
async function ready(page, role = 'admin') {
  await page.locator('#whoami-role', { hasText: role }).waitFor({ timeout: WAIT });
  await page.locator('#connection[data-state="live"]').waitFor({ timeout: WAIT });
}

describe('dashboard', { timeout: 300_000 }, () => {
  before(async () => {
    env = await startEnvironment();
    profile = await applyStack(env);
    browser = await launchBrowser(chromium);
  }, { timeout: 120_000 });

  after(async () => {
    await browser?.close().catch(() => {});
    await env?.stop();
  }, { timeout: 60_000 });

  test('loads with no console error, shows the caller and goes live', async () => {
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      assert.equal(await textOf(page.locator('#whoami-name')), 'test-admin');
      // The token left the address bar and is kept for the next visit.
      assert.equal(await page.evaluate(() => window.location.hash), '');
      assert.equal(await page.evaluate(() => window.localStorage.getItem('orch.token')), env.adminToken);
      await page.locator('#health-banner[data-state="healthy"]').waitFor({ timeout: WAIT });
      await page.locator('#services-table').waitFor({ timeout: WAIT });
      assert.equal(await page.locator('#api-docs-link').getAttribute('href'), '/api-docs/');
      // Every view renders once (the stack and priorities are read at start).
      for (const tab of ['stack', 'nodes', 'events', 'priorities', 'workflows', 'cluster', 'services']) {
        await page.click(`#tab-${tab}`);
        assert.equal(await page.locator(`#panel-${tab}`).isVisible(), true, `${tab} panel visible`);
      }
      await page.locator('#stack-graph').waitFor({ state: 'attached', timeout: WAIT });
      await page.locator('#priorities-table').waitFor({ state: 'attached', timeout: WAIT });
      await page.locator('#cluster-mode').waitFor({ state: 'attached', timeout: WAIT });
      await page.locator('#nodes-table').waitFor({ state: 'attached', timeout: WAIT });
      await page.locator('#placement-table').waitFor({ state: 'attached', timeout: WAIT });
      for (const t of ['#workflows-table', '#executions-table', '#schedules-table', '#queues-table']) await page.locator(t).waitFor({ state: 'attached', timeout: WAIT });
      // Let a periodic refresh or two pass with the page open.
      await page.waitForTimeout(1500);
      assert.equal(await page.locator('#errors').isVisible(), false, 'no error strip');
      assert.deepEqual(problems.page, [], 'no uncaught page error');
      assert.deepEqual(problems.console, [], 'no console error or warning');
    });
  });

  test('a service registered through the API appears without a reload', async () => {
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      await page.locator('#services-table').waitFor({ timeout: WAIT });
      await page.evaluate(() => {
        window.__sameDocument = true;
      });
      const name = `late-${suffix()}`;
      const inst = await register({ id: `${name}-1`, name, version: '2.0.1', tags: ['fresh'] });
      const row = page.locator(`#services-table tr[data-instance="${inst.id}"]`);
      await row.waitFor({ timeout: WAIT });
      assert.match(await textOf(row), /2\.0\.1/);
      assert.match(await textOf(page.locator(`#services-table tbody[data-service="${name}"]`)), new RegExp(name));
      // It came through the event stream: the feed has its registration.
      await page.click('#tab-events');
      await page
        .locator('#feed li[data-type="io.orch.registry.registered.v1"]', { hasText: inst.id })
        .waitFor({ timeout: WAIT });
      assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('a health change shows live in the services view and the feed', async () => {
    const name = `ttl-${suffix()}`;
    const inst = await register({
      id: `${name}-1`,
      name,
      checks: [{ kind: 'ttl', id: 'beat', ttl: '1h', initial_status: 'passing' }],
    });
    assert.equal(inst.health, 'passing');
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      const row = page.locator(`#services-table tr[data-instance="${inst.id}"]`);
      await row.and(page.locator('[data-health="passing"]')).waitFor({ timeout: WAIT });
      await page.evaluate(() => {
        window.__sameDocument = true;
      });
      const res = await env.admin('PUT', `/api/v1/instances/${inst.id}/checks/beat/ttl`, { status: 'critical', output: 'disk full' });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.changed, true);
      await page.locator(`#services-table tr[data-instance="${inst.id}"][data-health="critical"]`).waitFor({ timeout: WAIT });
      assert.equal(await textOf(row.locator('td.health .badge').first()), 'critical');
      assert.match(await textOf(row.locator('td.health')), /beat: critical/);
      // The system is degraded now (one service critical), and the banner says so.
      await page.locator('#health-banner[data-state="degraded"]').waitFor({ timeout: WAIT });
      await page.click('#tab-events');
      const ev = page.locator('#feed li[data-type="io.orch.health.instance_changed.v1"]', { hasText: inst.id });
      await ev.waitFor({ timeout: WAIT });
      assert.match(await textOf(ev), /passing → critical/);
      assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
      // Back to passing, so the other tests see a healthy system.
      const back = await env.admin('PUT', `/api/v1/instances/${inst.id}/checks/beat/ttl`, { status: 'passing' });
      assert.equal(back.status, 200, back.text);
      await page.locator('#health-banner[data-state="healthy"]').waitFor({ timeout: WAIT });
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('the dependency graph and the start-up Gantt chart render', async () => {
    const graph = (await env.admin('GET', '/api/v1/stack/graph?format=json')).body;
    assert.deepEqual(graph.services.map((s) => s.name).sort(), STACK_SERVICES);
    assert.equal(graph.edges.length, STACK_EDGES);
    const chain = profile.chain.map((c) => c.service);
    assert.ok(chain.length >= 3, `a critical chain of at least 3 services: ${chain.join(', ')}`);
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      await page.click('#tab-stack');
      const svg = page.locator('#stack-graph');
      await svg.waitFor({ timeout: WAIT });
      await waitFor('a node per service', async () => (await svg.locator('g.node').count()) === STACK_SERVICES.length, WAIT);
      for (const s of graph.services) {
        const node = svg.locator(`g.node[data-service="${s.name}"]`);
        assert.equal(await node.isVisible(), true, `node ${s.name} visible`);
        assert.match(await textOf(node), new RegExp(s.name));
        assert.equal(await node.locator('rect').getAttribute('class'), `node-rect state-${s.state}${s.critical ? ' critical' : ''}`);
      }
      assert.equal(await svg.locator('path.edge').count(), STACK_EDGES);
      for (const e of graph.edges) {
        const edge = svg.locator(`path.edge[data-from="${e.from}"][data-to="${e.to}"]`);
        assert.equal(await edge.count(), 1, `edge ${e.from} -> ${e.to}`);
        assert.equal((await edge.getAttribute('class')).includes('optional'), !e.required);
      }
      const legend = await textOf(page.locator('#graph-legend'));
      for (const word of ['ready', 'completed', 'crashed', 'optional']) assert.match(legend, new RegExp(word));

      const gantt = page.locator('#stack-gantt');
      await gantt.waitFor({ timeout: WAIT });
      assert.equal(await gantt.locator('rect.bar.run').count(), STACK_SERVICES.length, 'a bar per service');
      const critical = await gantt.locator('rect.bar.run.critical').evaluateAll((els) => els.map((e) => e.getAttribute('data-service')));
      assert.deepEqual(critical.sort(), [...chain].sort(), 'the critical chain is marked');
      for (const name of STACK_SERVICES.filter((n) => !chain.includes(n))) {
        assert.equal(await gantt.locator(`rect.bar.run.critical[data-service="${name}"]`).count(), 0, `${name} not on the chain`);
      }
      const labels = await gantt.locator('text.bar-label.critical').allTextContents();
      assert.equal(labels.length, chain.length);
      for (const l of labels) assert.match(l, /critical chain/);
      assert.match(await textOf(page.locator('#critical-chain')), new RegExp(`^Critical chain: ${chain.join(' \\([^)]*\\) → ')} \\(`));
      assert.match(await textOf(page.locator('#profile-summary')), /ready/);
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('untrusted text is shown as text and never runs', async () => {
    // Service names are restricted to a-z 0-9 - _ (§3.1): the hostile name is refused...
    const refused = await env.admin('POST', '/api/v1/services', { name: HOSTILE, address: '127.0.0.1', port: 9000 });
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.body.error.field, 'name');
    // ...so it goes where free text is allowed: version, a tag, metadata, a priority reason.
    const name = `xss-${suffix()}`;
    const inst = await register({ id: `${name}-1`, name, version: HOSTILE, tags: [HOSTILE], metadata: { note: HOSTILE } });
    const prio = await env.admin('PUT', `/api/v1/priorities/${name}`, { value: 61, reason: HOSTILE, source: 'engine:browser-test' });
    assert.equal(prio.status, 200, prio.text);
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      const row = page.locator(`#services-table tr[data-instance="${inst.id}"]`);
      await row.waitFor({ timeout: WAIT });
      const table = page.locator('#services-table');
      await table.getByText(HOSTILE, { exact: true }).first().waitFor({ timeout: WAIT });
      assert.ok((await table.getByText(HOSTILE, { exact: true }).count()) >= 2, 'version and tag shown as text');
      assert.equal(await textOf(row.locator('td.version')), HOSTILE);
      // The priority reason, in the services view and the history.
      await page.locator(`#services-table tbody[data-service="${name}"] td.who`, { hasText: HOSTILE }).waitFor({ timeout: WAIT });
      await page.click(`#services-table tbody[data-service="${name}"] button.service-name`);
      await page.locator(`#history-table[data-service="${name}"]`).getByText(HOSTILE, { exact: true }).waitFor({ timeout: WAIT });
      // The raw event, expanded, is text too.
      await page.click('#tab-events');
      await page.locator('#subject-filter').fill(`${env.prefix}.evt.registry.${name}.>`);
      await page.locator('#feed-form button[type="submit"]').click();
      await page.locator('#feed-subjects', { hasText: `${env.prefix}.evt.registry.${name}.>` }).waitFor({ timeout: WAIT });
      await register({ id: `${name}-2`, name, version: HOSTILE, tags: [HOSTILE], metadata: { note: HOSTILE } });
      const ev = page.locator('#feed li[data-type="io.orch.registry.registered.v1"]', { hasText: `${name}-2` });
      await ev.waitFor({ timeout: WAIT });
      await ev.locator('button.event-head').click();
      assert.match(await textOf(ev.locator('pre')), /<img src=x onerror=window\.__xss=1>/);

      assert.equal(await page.locator('#app img').count(), 0, 'no <img> element in the app');
      assert.equal(await page.locator('img').count(), 0, 'no <img> element in the page');
      assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('a viewer token sees the dashboard as viewer', async () => {
    await withPage(env.viewerToken, async ({ page, problems }) => {
      await ready(page, 'viewer');
      assert.equal(await textOf(page.locator('#whoami-role')), 'viewer');
      assert.equal(await textOf(page.locator('#whoami-name')), 'test-viewer');
      await page.locator('#services-table tbody.service-group').first().waitFor({ timeout: WAIT });
      await page.click('#tab-stack');
      await page.locator('#stack-graph g.node').first().waitFor({ timeout: WAIT });
      assert.equal(await page.locator('#errors').isVisible(), false, 'no error strip');
      assert.equal(await page.locator('#login').isVisible(), false, 'no token form');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('the priority history of a service shows its changes, live', async () => {
    const first = await env.admin('PUT', '/api/v1/priorities/api', {
      value: 80,
      reason: 'release week: api first',
      source: 'engine:browser-test',
    });
    assert.equal(first.status, 200, first.text);
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      await page.click('#tab-priorities');
      const listRow = page.locator('#priorities-table tr[data-service="api"]');
      await listRow.waitFor({ timeout: WAIT });
      await listRow.locator('button').click();
      const history = page.locator('#history-table[data-service="api"]');
      const row1 = history.locator(`tr[data-change="${first.body.change.id}"]`);
      await row1.waitFor({ timeout: WAIT });
      const cells = await row1.locator('td').allTextContents();
      assert.equal(cells[1], 'set');
      assert.equal(cells[2], '50 → 80');
      assert.equal(cells[3], 'applied');
      // What the caller said of itself, and below it who it is, as authenticated.
      assert.equal(cells[4], 'engine:browser-testkey:test-admin');
      assert.equal(await row1.locator('td [data-principal]').getAttribute('data-principal'), 'key:test-admin');
      assert.equal(cells[5], 'release week: api first');
      assert.match(await textOf(listRow), /80/);
      // A second change appears on top without a reload.
      const second = await env.admin('PUT', '/api/v1/priorities/api', { value: 85, reason: 'still busy', source: 'engine:browser-test' });
      assert.equal(second.status, 200, second.text);
      await history.locator(`tr[data-change="${second.body.change.id}"]`).waitFor({ timeout: WAIT });
      await waitFor('the new change on top', async () => (await history.locator('tbody tr').first().getAttribute('data-change')) === second.body.change.id, WAIT);
      assert.equal(await history.locator('tbody tr').count(), 2);
      await page.locator('#priorities-table tr[data-service="api"] td:nth-child(2)', { hasText: '85' }).waitFor({ timeout: WAIT });
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('the event feed follows a subject filter and refuses a bad one', async () => {
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      await page.click('#tab-events');
      const filter = `${env.prefix}.evt.priority.>`;
      await page.locator('#subject-filter').fill(filter);
      await page.locator('#feed-form button[type="submit"]').click();
      await page.locator('#feed-subjects', { hasText: filter }).waitFor({ timeout: WAIT });
      await page.locator('#connection[data-state="live"]').waitFor({ timeout: WAIT });
      const name = `filt-${suffix()}`;
      await register({ id: `${name}-1`, name });
      const set = await env.admin('PUT', `/api/v1/priorities/${name}`, { value: 40, reason: 'quiet hours', source: 'engine:browser-test' });
      assert.equal(set.status, 200, set.text);
      await page.locator('#feed li', { hasText: `${name}: 50 → 40` }).waitFor({ timeout: WAIT });
      const types = await page.locator('#feed li').evaluateAll((els) => els.map((e) => e.getAttribute('data-subject')));
      assert.ok(types.length >= 1);
      for (const subject of types) assert.ok(subject.startsWith(`${env.prefix}.evt.priority.`), `only priority events: ${subject}`);
      // A filter that is not a NATS subject filter is refused before connecting.
      await page.locator('#subject-filter').fill(`${env.prefix}.evt.>.x`);
      await page.locator('#feed-form button[type="submit"]').click();
      await page.locator('#feed-form .problem', { hasText: 'must be the last token' }).waitFor({ timeout: WAIT });
      assert.equal(await textOf(page.locator('#feed-subjects')), filter);
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('a refused token brings up the token form, and a good one signs in', async () => {
    await withPage('not-a-valid-token-0000', async ({ page, problems }) => {
      const input = page.locator('#login #token-input');
      await input.waitFor({ timeout: WAIT });
      assert.match(await textOf(page.locator('#login')), /token was refused/);
      await input.fill(env.adminToken);
      await page.locator('#login button[type="submit"]').click();
      await ready(page);
      assert.equal(await page.locator('#login').isVisible(), false);
      assert.equal(await page.evaluate(() => window.localStorage.getItem('orch.token')), env.adminToken);
      await page.locator('#services-table').waitFor({ timeout: WAIT });
      assert.deepEqual(problems.page, []);
      // Only the browser's own lines for the refused requests (401), nothing else.
      for (const m of problems.console) assert.match(m.text, /status of 401|429|503/, m.text);
    });
  });

  test('the cluster view says that one orchestrator runs alone', async () => {
    const res = await env.viewer('GET', '/api/v1/cluster');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.mode, 'single');
    assert.deepEqual(res.body.replicas, []);
    assert.equal(res.body.leader ?? null, null);
    assert.equal(res.body.answered_by ?? null, null);
    await withPage(env.viewerToken, async ({ page, problems }) => {
      await ready(page, 'viewer');
      await page.click('#tab-cluster');
      const mode = page.locator('#cluster-mode[data-mode="single"]');
      await mode.waitFor({ timeout: WAIT });
      const text = await textOf(mode);
      assert.match(text, /One orchestrator runs alone/);
      assert.match(text, /orchestrator serve --replica NAME/);
      assert.match(text, /Leadership of replicas/);
      assert.equal(await page.locator('#cluster-table').count(), 0, 'no table of replicas');
      assert.equal(await page.locator('#cluster-leader').count(), 0, 'no leader line');
      // The header's "replica · leader" line and the tab's count are rendered with the view.
      assert.equal(await page.locator('#cluster-summary').isVisible(), false, 'no replica line in the header');
      assert.equal(await textOf(page.locator('#tab-cluster .count')), '');
      assert.equal(await page.locator('#errors').isVisible(), false, 'no error strip');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('the cluster view shows the replicas, the leader, a failover and the new term (stubbed answers)', async () => {
    // The test orchestrator runs alone, so a group of three replicas is played in the page: its
    // GET /api/v1/cluster answers are stubbed, and the leadership events are added to the real
    // event stream, as the new leader's relay would publish them.
    const now = Date.now();
    const iso = (msAgo) => new Date(now - msAgo).toISOString();
    const replica = (name, port, role, seenMsAgo, version = '0.1.0') => ({
      name,
      http_url: `http://127.0.0.1:${port}`,
      version,
      role,
      started_at: iso(3_600_000),
      seen_at: iso(seenMsAgo),
    });
    let answer = {
      mode: 'replicated',
      answered_by: 'b',
      leader: { replica: 'a', term: 3, since: iso(600_000), expires_at: iso(-5_000) },
      replicas: [replica('c', 8082, 'gone', 60_000, HOSTILE), replica('b', 8081, 'standby', 500), replica('a', 8080, 'leader', 400)],
    };
    const feeds = [];
    const setup = async (page) => {
      await page.route(/\/api\/v1\/cluster$/, (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(answer) }));
      await page.routeWebSocket(/\/api\/v1\/ws(\?|$)/, (ws) => {
        ws.connectToServer(); // the real feed, forwarded both ways
        feeds.push(ws);
      });
    };
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      const summary = page.locator('#cluster-summary');
      await summary.waitFor({ timeout: WAIT });
      assert.equal(await textOf(summary), 'replica b · leader a (term 3)');
      // The header's line opens the view.
      await summary.click();
      assert.equal(await page.locator('#panel-cluster').isVisible(), true);
      assert.equal(await textOf(page.locator('#tab-cluster .count')), '3');
      const rows = page.locator('#cluster-table tbody tr.replica');
      const listed = () => rows.evaluateAll((els) => els.map((e) => `${e.dataset.replica}:${e.dataset.role}`).join(' '));
      assert.equal(await listed(), 'a:leader b:standby c:gone', 'the leader first, the replicas gone last');
      const leaderRow = page.locator('#cluster-table tr.replica.leader');
      assert.equal(await leaderRow.count(), 1, 'one row marked as the leader');
      const cells = await leaderRow.locator('td').allTextContents();
      assert.deepEqual(cells.slice(0, 4), ['a', '★ leader term 3', 'http://127.0.0.1:8080', '0.1.0']);
      assert.match(cells[4], /\(1 h ago\)$/, `started: ${cells[4]}`);
      assert.match(cells[5], /\(\d+ s ago\)$/, `last seen: ${cells[5]}`);
      assert.match(await textOf(page.locator('#cluster-leader[data-leader="a"][data-term="3"]')), /^Leader a · term 3 · since .*\(10 min ago\) · lease until /);
      assert.equal(await textOf(page.locator('#cluster-answered-by')), 'This page is answered by replica b.');
      assert.equal(await page.locator('#cluster-table tr[data-replica="b"] .answered').count(), 1, 'the replica that answered is marked');
      assert.equal(await textOf(page.locator('#cluster-table tr[data-replica="c"] td.version')), HOSTILE, 'untrusted text shown as text');
      assert.equal(await page.locator('img').count(), 0, 'no <img> element in the page');

      // The leader is gone and no standby has taken the lease yet: no event says so, the
      // periodic read (every 10 s) shows it.
      answer = {
        ...answer,
        leader: null,
        replicas: [replica('a', 8080, 'gone', 6_000), replica('b', 8081, 'standby', 300), replica('c', 8082, 'gone', 66_000)],
      };
      const failover = page.locator('#cluster-leader.failover');
      await failover.waitFor({ timeout: WAIT });
      assert.match(await textOf(failover), /^No leader: failover under way/);
      assert.equal(await textOf(summary), 'replica b · no leader: failover under way');
      assert.equal(await page.locator('#cluster-table tr.replica.leader').count(), 0);

      // b takes the lease: its leader_lost and leader_elected events come on the feed, and the
      // view is read again at once, long before the next periodic read.
      answer = {
        ...answer,
        leader: { replica: 'b', term: 4, since: iso(0), expires_at: iso(-5_000) },
        replicas: [replica('a', 8080, 'gone', 7_000), replica('b', 8081, 'leader', 100), replica('c', 8082, 'gone', 67_000)],
      };
      const feed = feeds.at(-1);
      assert.ok(feed, 'the page opened its event stream');
      const event = (replicaName, kind, data) => ({
        type: 'event',
        seq: 0,
        subject: `${env.prefix}.evt.cluster.${replicaName}.${kind}`,
        event: { specversion: '1.0', id: randomUUID(), type: `io.orch.cluster.${kind}.v1`, source: '/orchestrator', subject: replicaName, time: iso(0), principal: 'orchestrator', data },
      });
      feed.send(JSON.stringify(event('a', 'leader_lost', { replica: 'a', term: 3, successor: 'b', successor_term: 4, reason: 'holder_gone' })));
      feed.send(JSON.stringify(event('b', 'leader_elected', { replica: 'b', term: 4, since: iso(0), previous: 'a', reason: 'holder_gone' })));
      // The events make the view read again (so does the periodic read: the wait does not
      // depend on which comes first, only that the new leader is shown).
      await page.locator('#cluster-leader[data-leader="b"][data-term="4"]').waitFor({ timeout: WAIT });
      assert.equal(await listed(), 'b:leader a:gone c:gone');
      assert.equal(await textOf(summary), 'replica b · leader b (term 4)');
      assert.equal(await page.locator('#cluster-table tr[data-replica="b"] .answered').count(), 1);

      // The feed says what happened in words.
      await page.click('#tab-events');
      const elected = page.locator('#feed li.domain-cluster[data-type="io.orch.cluster.leader_elected.v1"]');
      const lost = page.locator('#feed li.domain-cluster[data-type="io.orch.cluster.leader_lost.v1"]');
      await elected.waitFor({ timeout: WAIT });
      assert.equal(await textOf(elected.locator('.ev-kind')), 'cluster.leader_elected');
      assert.equal(await textOf(elected.locator('.ev-summary')), "b leads, term 4 (after a): the leader's process was gone");
      assert.equal(await textOf(lost.locator('.ev-summary')), "a lost the lead (term 3) to b, term 4: the leader's process was gone");
      assert.equal(await page.locator('#errors').isVisible(), false, 'no error strip');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    }, '/', setup);
  });

  test('the nodes view shows the embedded agent’s node, and the stack view where each replica runs', async () => {
    // The agent names a process at its next report (every 2 s): wait until it has named both replicas.
    const node = await waitFor('the embedded agent’s node, with the replicas of web', async () => {
      const res = await env.viewer('GET', '/api/v1/nodes');
      const local = res.body?.nodes?.find((n) => n.name === 'local');
      const services = (local?.allocations ?? []).map((a) => a.service);
      return local?.status === 'ready' && services.includes('web-0') && services.includes('web-1') ? local : null;
    }, WAIT);
    assert.equal(node.labels.disk, 'ssd');
    const stack = (await env.viewer('GET', '/api/v1/stack')).body;
    const byName = new Map(stack.services.map((sv) => [sv.name, sv]));
    for (const name of ['web-0', 'web-1']) {
      const sv = byName.get(name);
      assert.equal(sv.replica_of, 'web', name);
      assert.equal(sv.node, 'local', name);
      assert.match(sv.placement, /^placed on local/, name);
    }
    const web1 = node.allocations.find((a) => a.service === 'web-1');
    // As the view writes amounts: millicores below one CPU ("900 m"), whole tenths of CPUs above.
    const cpu = (m) => (m < 1000 || m % 100 !== 0 ? `${m} m` : `${m / 1000} CPU`);
    await withPage(env.viewerToken, async ({ page, problems }) => {
      await ready(page, 'viewer');
      await page.click('#tab-nodes');
      const row = page.locator('#nodes-table tr.node-row[data-node="local"][data-status="ready"]');
      await row.waitFor({ timeout: WAIT });
      assert.equal(await textOf(page.locator('#tab-nodes .count')), '1');
      assert.equal(await textOf(row.locator('td.status .badge')), 'ready');
      const cpuCell = row.locator('td.resource.cpu');
      assert.equal(await cpuCell.getAttribute('data-capacity'), String(node.capacity.cpu));
      assert.equal(await cpuCell.getAttribute('data-allocatable'), String(node.allocatable.cpu));
      assert.match(await textOf(cpuCell), new RegExp(`capacity ${cpu(node.capacity.cpu)} · reserved ${cpu(node.reserved.cpu)} · free`));
      assert.equal(await cpuCell.locator('svg.bar-meter').count(), 1, 'a bar of what is allocated');
      const memCell = row.locator('td.resource.memory');
      assert.equal(await memCell.getAttribute('data-capacity'), String(node.capacity.memory));
      assert.equal(await textOf(row.locator('td.enforcement')), node.enforcement);
      assert.equal(await textOf(row.locator('td.labels .chip')), 'disk=ssd');
      assert.match(await textOf(row.locator('td.use')), /CPU .*%.*memory .*%/);
      // The replicas running there, each with its service, pid and what it asked for.
      const replica = row.locator('td.node-services .allocation[data-service="web-1"]');
      await replica.waitFor({ timeout: WAIT });
      assert.equal(await textOf(replica), `web-1 of web pid ${web1.pid} · 100 m · 32 MiB`);
      assert.equal(await row.locator('td.node-services .allocation[data-service="web-0"]').count(), 1);

      // The stack view: where each service runs, the service of each replica, and why there.
      await page.click('#tab-stack');
      const placed = page.locator('#placement-table tr[data-service="web-1"]');
      await placed.waitFor({ timeout: WAIT });
      assert.equal(await placed.getAttribute('data-node'), 'local');
      assert.equal(await textOf(placed.locator('td.replica-of')), 'web');
      assert.equal(await textOf(placed.locator('td.node')), 'local');
      assert.equal(await textOf(placed.locator('td.resources')), '100 m · 32 MiB');
      assert.equal(await textOf(placed.locator('td.placement')), byName.get('web-1').placement);
      const api = page.locator('#placement-table tr[data-service="api"]');
      assert.equal(await api.getAttribute('data-node'), byName.get('api').node);
      assert.equal(await textOf(api.locator('td.replica-of')), '—', 'a service of one');
      assert.equal(await page.locator('#placement-table tbody tr').count(), STACK_SERVICES.length);
      const title = await textOf(page.locator('#stack-graph g.node[data-service="web-1"] > title'));
      for (const part of ['node local', 'replica of web', 'placed on local']) assert.ok(title.includes(part), `${part} in the graph's tooltip: ${title}`);
      // A service's node opens it in the Nodes view.
      await placed.locator('button.node-link').click();
      assert.equal(await page.locator('#panel-nodes').isVisible(), true);
      await page.locator('#nodes-table tr.node-row.selected[data-node="local"]').waitFor({ timeout: WAIT });
      assert.equal(await page.locator('#errors').isVisible(), false, 'no error strip');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('the feed shows the resource events in words, and they make the nodes be read again (events added to the stream)', async () => {
    // A node going down, a replica lost with it and a preemption cannot be made to happen with
    // the one embedded agent, so they are added to the page's real event stream, as the relay
    // would publish them.
    const feeds = [];
    const setup = async (page) => {
      await page.routeWebSocket(/\/api\/v1\/ws(\?|$)/, (ws) => {
        ws.connectToServer();
        feeds.push(ws);
      });
    };
    const now = new Date().toISOString();
    const event = (about, kind, data) => ({
      type: 'event',
      seq: 0,
      subject: `${env.prefix}.evt.resource.${about}.${kind}`,
      event: { specversion: '1.0', id: randomUUID(), type: `io.orch.resource.${kind}.v1`, source: '/orchestrator', subject: about, time: now, principal: 'orchestrator', data },
    });
    await withPage(env.viewerToken, async ({ page, problems }) => {
      await ready(page, 'viewer');
      await page.click('#tab-events');
      const feed = feeds.at(-1);
      assert.ok(feed, 'the page opened its event stream');
      const reads = [];
      page.on('request', (r) => {
        if (new URL(r.url()).pathname === '/api/v1/nodes') reads.push(r.url());
      });
      feed.send(JSON.stringify(event('n2', 'node_down', {
        node: 'n2', status: 'down', reason: 'silent for 10.4s (node-down time 10s)', last_seen: now,
        capacity: { cpu: 2000, memory: 4096 }, labels: { zone: HOSTILE }, services: ['api-1', 'batch'],
      })));
      feed.send(JSON.stringify(event('api-1', 'lost', { service: 'api-1', replica_of: 'api', node: 'n2', pid: 4242, reason: 'n2 went down' })));
      feed.send(JSON.stringify(event('batch', 'preempted', {
        service: 'batch', priority: 10, by: 'api', by_priority: 90, node: 'n3', reason: HOSTILE, budget_left: 4,
      })));
      const summary = (type) => page.locator(`#feed li.domain-resource[data-type="io.orch.resource.${type}.v1"] .ev-summary`);
      await summary('preempted').waitFor({ timeout: WAIT });
      assert.equal(await textOf(summary('node_down')), 'node n2 down: silent for 10.4s (node-down time 10s) · ran api-1, batch');
      assert.equal(await textOf(summary('lost')), 'api-1 (replica of api) lost with node n2 (pid 4242): n2 went down');
      assert.equal(await textOf(summary('preempted')), 'batch (priority 10) preempted on n3 for api (priority 90) · 4 left in the budget');
      assert.equal(await textOf(page.locator('#feed li[data-type="io.orch.resource.node_down.v1"] .ev-kind')), 'resource.node_down');
      // They schedule a read of the nodes (coalesced over 250 ms, after a read under way, which
      // takes a while on a loaded machine). The bound stays below the 10 s of the periodic read,
      // which may still come first by chance: then this passes by luck.
      await waitFor('a read of the nodes', async () => reads.length > 0, 8_000, 50);
      await page.locator('#feed li[data-type="io.orch.resource.preempted.v1"] button.event-head').click();
      assert.match(await textOf(page.locator('#feed li[data-type="io.orch.resource.preempted.v1"] pre')), /<img src=x onerror=window\.__xss=1>/);
      assert.equal(await page.locator('img').count(), 0, 'no <img> element in the page');
      assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    }, '/', setup);
  });

  test('the feed shows each event of a rolling update in words (events added to the stream)', async () => {
    // A batch that moved on, an update completed and one failed, added to the page's real event
    // stream as the relay would publish them (the live test below holds its update in progress).
    const feeds = [];
    const setup = async (page) => {
      await page.routeWebSocket(/\/api\/v1\/ws(\?|$)/, (ws) => {
        ws.connectToServer();
        feeds.push(ws);
      });
    };
    const now = new Date().toISOString();
    const rollout = (kind, data) => ({
      type: 'event',
      seq: 0,
      subject: `${env.prefix}.evt.lifecycle.api.${kind}`,
      event: {
        specversion: '1.0', id: randomUUID(), type: `io.orch.lifecycle.${kind}.v1`, source: '/orchestrator', subject: 'api', time: now, principal: 'orchestrator',
        data: { service: 'api', version: 3, from_version: 2, max_parallel: 1, replaced: [], batch: [], remaining: [], started_at: now, ...data },
      },
    });
    await withPage(env.viewerToken, async ({ page, problems }) => {
      await ready(page, 'viewer');
      await page.click('#tab-events');
      const feed = feeds.at(-1);
      assert.ok(feed, 'the page opened its event stream');
      feed.send(JSON.stringify(rollout('rollout_progressed', { revert_to: 2, replaced: ['api-0'], batch: ['api-1'], remaining: ['api-2'] })));
      feed.send(JSON.stringify(rollout('rollout_completed', { revert_to: 2, replaced: ['api-0', 'api-1', 'api-2'] })));
      feed.send(JSON.stringify(rollout('rollout_failed', { revert_to: 2, batch: ['api-0'], remaining: ['api-1', 'api-2'], reason: HOSTILE })));
      const summary = (kind) => page.locator(`#feed li.domain-lifecycle[data-type="io.orch.lifecycle.${kind}.v1"] .ev-summary`);
      await summary('rollout_failed').waitFor({ timeout: WAIT });
      assert.equal(await textOf(summary('rollout_progressed')), 'api: rolling to v3 (1 of 3 replaced, batch api-1)');
      assert.equal(await textOf(summary('rollout_completed')), 'api: rolled out v3 (3 of 3 replaced)');
      assert.equal(await textOf(summary('rollout_failed')), `api: rollout to v3 failed: ${HOSTILE}; reverting to v2`);
      // An update that does not revert (turned off, or itself a revert) says so.
      feed.send(JSON.stringify(rollout('rollout_failed', { batch: ['api-1'], reason: 'api-1 not healthy for 10s within healthy_deadline (5m)' })));
      await page.locator('#feed li[data-type="io.orch.lifecycle.rollout_failed.v1"]', { hasText: 'not reverted' }).waitFor({ timeout: WAIT });
      assert.equal(await textOf(summary('rollout_failed').first()), 'api: rollout to v3 failed: api-1 not healthy for 10s within healthy_deadline (5m); not reverted');
      assert.equal(await page.locator('img').count(), 0, 'no <img> element in the page');
      assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    }, '/', setup);
  });

  test('the workflows view: a workflow and its schedule, a run from the form, its DAG live, an approval, a cancel', async () => {
    const name = `deploy-${suffix()}`;
    // A firing 12 hours away: the schedule cannot fire while the test runs.
    const hour = (new Date().getUTCHours() + 12) % 24;
    const cron = `0 0 ${hour} * * *`;
    const toml = [
      '[workflow]',
      `name = "${name}"`,
      'queue = "releases"',
      `description = "${HOSTILE}"`,
      '[steps.ask]',
      'kind = "approval"',
      'timeout = "1h"',
      '[steps.roll]',
      'kind = "wait"',
      'duration = "10ms"',
      'needs = ["ask"]',
      '[[schedule]]',
      `cron = "${cron}"`,
      'timezone = "UTC"',
      '',
    ].join('\n');
    const put = await env.admin('PUT', `/api/v1/workflows/${name}`, toml, { contentType: 'application/toml' });
    assert.equal(put.status, 201, put.text);
    const schedules = await env.viewer('GET', '/api/v1/schedules');
    assert.equal(schedules.status, 200, schedules.text);
    const schedule = schedules.body.find((s) => s.workflow === name);
    assert.ok(schedule, `a schedule of ${name}: ${schedules.text}`);
    const runPath = `/api/v1/workflows/${name}/executions`;

    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      await page.evaluate(() => {
        window.__sameDocument = true;
      });
      await page.click('#tab-workflows');
      assert.equal(await page.locator('#panel-workflows').isVisible(), true);

      // The workflow, its description shown as text.
      const row = page.locator(`#workflows-table tr[data-workflow="${name}"]`);
      await row.waitFor({ timeout: WAIT });
      const cells = await row.locator('td').allTextContents();
      assert.deepEqual(cells.slice(0, 6), [name, '1', 'releases', '50', HOSTILE, '2']);
      assert.match(cells[6], /key:test-admin/);

      // Its schedule, with the next firing as the API gives it, relative to now.
      const sched = page.locator(`#schedules-table tr[data-workflow="${name}"]`);
      await sched.waitFor({ timeout: WAIT });
      const sc = await sched.locator('td').allTextContents();
      assert.deepEqual(sc.slice(1, 5), [cron, 'UTC', 'skip', 'once']);
      assert.equal(await sched.locator('td.next').getAttribute('data-next'), schedule.next_fire_at);
      assert.match(sc[5], /\(in (11|12) h\)$/, `next firing: ${sc[5]}`);
      assert.equal(sc[6], 'never');

      // Its steps as a DAG: ask, then roll.
      await row.locator('button.workflow-name').click();
      const dag = page.locator('#workflow-dag');
      await dag.waitFor({ timeout: WAIT });
      assert.equal(await dag.locator('g.node').count(), 2);
      assert.equal(await dag.locator('g.node[data-step="ask"]').getAttribute('data-kind'), 'approval');
      assert.equal(await dag.locator('g.node[data-step="roll"]').getAttribute('data-kind'), 'wait');
      assert.equal(await dag.locator('path.edge[data-from="ask"][data-to="roll"]').count(), 1);
      assert.equal(await dag.locator('path.edge').count(), 1);
      assert.match(await textOf(page.locator('#workflow-head')), /version 1/);

      // Inputs that are not JSON are refused before sending; an unknown input by the API, which
      // names it.
      const inputs = page.locator('#run-inputs');
      await inputs.fill('{"nope": ');
      await page.click('#run-submit');
      await page.locator('#run-problem', { hasText: 'not JSON' }).waitFor({ timeout: WAIT });
      await inputs.fill('{"nope": 1}');
      await page.click('#run-submit');
      await page.locator('#run-problem[data-field="inputs.nope"]').waitFor({ timeout: WAIT });

      // A run from the form: the execution is shown at once, and its approval step comes to wait.
      await inputs.fill('{}');
      await page.click('#run-submit');
      const detail = page.locator('#execution-detail[data-execution]');
      await detail.waitFor({ timeout: WAIT });
      const id = await detail.getAttribute('data-execution');
      assert.equal(await textOf(page.locator('#run-problem')), '', 'the earlier problem is gone');
      const stored = await env.viewer('GET', `/api/v1/executions/${id}`);
      assert.equal(stored.status, 200, stored.text);
      assert.equal(stored.body.workflow, name);
      assert.equal(stored.body.created_by, 'key:test-admin');
      const execDag = page.locator('#execution-dag');
      await execDag.locator('g.node[data-step="ask"][data-status="running"]').waitFor({ timeout: WAIT });
      assert.equal(await execDag.locator('g.node[data-step="roll"]').getAttribute('data-status'), 'pending');
      assert.equal(await execDag.locator('g.node[data-step="ask"]').getAttribute('data-attempt'), '1');
      assert.equal(await execDag.locator('path.edge[data-from="ask"][data-to="roll"]').count(), 1);
      const listed = page.locator(`#executions-table tr[data-execution="${id}"]`);
      await listed.waitFor({ timeout: WAIT });
      const lc = await listed.locator('td').allTextContents();
      assert.equal(lc[0], id.slice(0, 8));
      assert.equal(lc[4], 'manual');
      assert.equal(lc[6], 'key:test-admin');
      assert.equal(await page.locator('#execution-cancel').isVisible(), true, 'an execution under way can be cancelled');

      // Approved with a comment: the execution goes on to its end, live.
      const approval = page.locator('#execution-actions .approval[data-step="ask"]');
      await approval.locator('input.comment').fill('ship it');
      await approval.locator('button.approve').click();
      await page.locator(`#execution-detail[data-execution="${id}"][data-status="succeeded"]`).waitFor({ timeout: WAIT });
      for (const step of ['ask', 'roll']) {
        const node = execDag.locator(`g.node[data-step="${step}"]`);
        assert.equal(await node.getAttribute('data-status'), 'succeeded', step);
        assert.equal(await node.getAttribute('data-attempt'), '1', step);
      }
      const askRow = page.locator('#steps-table tr[data-step="ask"]');
      assert.equal(await textOf(askRow.locator('td.attempt')), '1');
      const output = await textOf(askRow.locator('td.step-output'));
      for (const part of ['"decision":"approve"', '"by":"key:test-admin"', '"comment":"ship it"']) assert.ok(output.includes(part), `${part} in ${output}`);
      assert.equal(await page.locator('#execution-actions .approval').count(), 0, 'nothing left to decide');
      assert.equal(await page.locator('#execution-cancel').count(), 0, 'an execution that ended cannot be cancelled');
      await page.locator(`#executions-table tr[data-execution="${id}"][data-status="succeeded"]`).waitFor({ timeout: WAIT });
      await page.locator('#queues-table tr[data-queue="releases"] td.succeeded', { hasText: /^1$/ }).waitFor({ timeout: WAIT });
      const queue = await page.locator('#queues-table tr[data-queue="releases"] td').allTextContents();
      assert.deepEqual(queue.slice(0, 6), ['releases', '0', '0', '1', '0', '0']);
      assert.match(queue[6], /\d ms|\d\.\d\d s/);

      // A second run, cancelled while its approval waits.
      await page.click('#run-submit');
      const second = page.locator(`#execution-detail[data-execution]:not([data-execution="${id}"])`);
      await second.waitFor({ timeout: WAIT });
      const id2 = await second.getAttribute('data-execution');
      await execDag.locator('g.node[data-step="ask"][data-status="running"]').waitFor({ timeout: WAIT });
      await page.click('#execution-cancel');
      await page.click('#execution-cancel-confirm');
      await page.locator(`#execution-detail[data-execution="${id2}"][data-status="cancelled"]`).waitFor({ timeout: WAIT });
      assert.match(await textOf(page.locator('#execution-detail .execution-reason')), /cancelled by key:test-admin/);
      await execDag.locator('g.node[data-step="ask"][data-status="cancelled"]').waitFor({ timeout: WAIT });
      await page.locator('#queues-table tr[data-queue="releases"] td.cancelled', { hasText: /^1$/ }).waitFor({ timeout: WAIT });

      // The list narrowed to the workflow: both runs, the newest first.
      await page.locator('#executions-workflow').selectOption(name);
      await waitFor('the executions of the workflow', async () => {
        const ids = await page.locator('#executions-table tbody tr[data-execution]').evaluateAll((els) => els.map((e) => e.dataset.execution));
        return ids.join(' ') === `${id2} ${id}`;
      }, WAIT);

      // The feed says what happened in words.
      await page.click('#tab-events');
      const short = id.slice(0, 8);
      const done = page.locator('#feed li[data-type="io.orch.workflow.succeeded.v1"]', { hasText: short });
      await done.waitFor({ timeout: WAIT });
      assert.equal(await textOf(done.locator('.ev-summary')), `${name} ${short} succeeded`);
      const approved = page.locator('#feed li[data-type="io.orch.workflow.step_succeeded.v1"]', { hasText: `${short} step ask` });
      assert.equal(await textOf(approved.locator('.ev-summary')), `${name} ${short} step ask succeeded (attempt 1) · running`);

      assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
      assert.equal(await page.locator('img').count(), 0, 'no <img> element in the page');
      assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined');
      await page.locator('#errors').waitFor({ state: 'hidden', timeout: WAIT });
      assert.deepEqual(problems.page, []);
      // The browser logs the refused run (400); nothing else.
      assert.deepEqual(unexpected(problems, [[400, runPath]]), []);
    });

    // A viewer sees the same, without the buttons it may not use.
    const run = await env.admin('POST', runPath, { inputs: {} });
    assert.equal(run.status, 202, run.text);
    const id3 = run.body.id;
    await waitFor('the approval to wait', async () => {
      const e = await env.viewer('GET', `/api/v1/executions/${id3}`);
      return e.body?.steps?.ask?.status === 'running';
    }, WAIT);
    await withPage(env.viewerToken, async ({ page, problems }) => {
      await ready(page, 'viewer');
      await page.click('#tab-workflows');
      await page.locator(`#workflows-table tr[data-workflow="${name}"] button.workflow-name`).click();
      await page.locator('#workflow-dag').waitFor({ timeout: WAIT });
      assert.match(await textOf(page.locator('#run-form')), /needs the operator role/);
      assert.equal(await page.locator('#run-submit').count(), 0);
      await page.locator(`#executions-table tr[data-execution="${id3}"] button.execution-link`).click();
      await page.locator(`#execution-detail[data-execution="${id3}"] #execution-dag g.node[data-step="ask"][data-status="running"]`).waitFor({ timeout: WAIT });
      assert.match(await textOf(page.locator('#execution-actions .approval[data-step="ask"]')), /needs the operator role/);
      assert.equal(await page.locator('#execution-actions button').count(), 0, 'no Cancel, Approve or Reject');
      // Cancelled elsewhere: the page follows.
      const cancel = await env.admin('POST', `/api/v1/executions/${id3}/cancel`);
      assert.equal(cancel.status, 200, cancel.text);
      await page.locator(`#execution-detail[data-execution="${id3}"][data-status="cancelled"]`).waitFor({ timeout: WAIT });
      assert.equal(await page.locator('#errors').isVisible(), false, 'no error strip');
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('a rolling update shows in the stack view while it is in progress, and its start in the feed', async () => {
    // The small stack plus "roll", two replicas of orch-sleeper replaced one at a time. The
    // version rolled out must be healthy for an hour per replica, so the update stays in
    // progress, its first batch replaced and waiting, for as long as the test looks at it.
    const roll = (version, minHealthy, deadline, { crash = false } = {}) => `${STACK_TOML}
[services.roll]
command = ${JSON.stringify(env.sleeper)}
args = ["--ready-after", "0ms"${crash ? ', "--exit-after", "200ms", "--exit-code", "3"' : ''}]
count = 2
grace_period = "2s"
env = { VERSION = "${version}" }
update = { max_parallel = 1, min_healthy_time = "${minHealthy}", healthy_deadline = "${deadline}", auto_revert = ${!crash} }
`;
    const apply = async (manifest) => {
      const res = await env.admin('PUT', '/api/v1/stack?source=browser-test', manifest, { contentType: 'application/toml' });
      assert.equal(res.status, 202, res.text);
      return res.body;
    };
    const states = async () => {
      const res = await env.viewer('GET', '/api/v1/stack');
      return res.status === 200 ? res.body : null;
    };
    let restored = false;
    try {
      const first = await apply(roll('1', '1s', '1m'));
      await waitFor('both replicas of roll ready', async () => {
        const view = await states();
        const ready = (name) => view?.services.some((sv) => sv.name === name && sv.state === 'ready');
        return view?.version === first.version && ready('roll-0') && ready('roll-1');
      }, WAIT);
      await withPage(env.viewerToken, async ({ page, problems }) => {
        await ready(page, 'viewer');
        await page.click('#tab-stack');
        // No update in progress: the card is hidden.
        await page.locator('#rollouts', { hasText: 'No rolling update in progress.' }).waitFor({ state: 'attached', timeout: WAIT });
        assert.equal(await page.locator('#rollouts-card').isVisible(), false, 'no card without a rolling update');

        const second = await apply(roll('2', '1h', '2h'));
        assert.deepEqual(second.rolling, ['roll-0', 'roll-1'], 'both replicas are rolled, none stopped up front');
        const from = `v${first.version}`;
        const to = `v${second.version}`;
        const row = page.locator(`#rollouts-table tr.rollout[data-service="roll"][data-version="${second.version}"]`);
        await row.waitFor({ timeout: WAIT });
        assert.equal(await page.locator('#rollouts-card').isVisible(), true);
        assert.equal(await row.getAttribute('data-from-version'), String(first.version));
        assert.equal(await textOf(row.locator('td.name')), 'roll');
        assert.equal(await textOf(row.locator('td.versions')), `${from} → ${to}`);
        assert.equal(await textOf(row.locator('td.revert')), `reverts to ${from}`);
        assert.match(await textOf(row.locator('td.started')), /^\d+ (s|min) ago$/);
        // The first batch is roll-0, replaced and healthy for less than its hour: the update
        // waits there, with roll-1 still to do.
        await waitFor('roll-0 in the batch, roll-1 remaining', async () => (await textOf(row.locator('td.batch'))) === 'roll-0' && (await textOf(row.locator('td.remaining'))) === 'roll-1', WAIT);
        assert.equal(await textOf(row.locator('td.progress')), '0 of 2 replaced · 1 at a time');
        assert.equal(await page.locator('#rollouts-table tbody tr').count(), 1, 'one update in progress');
        // As the API says it.
        const [listed] = (await states()).rollouts;
        assert.deepEqual([listed.service, listed.version, listed.from_version, listed.revert_to], ['roll', second.version, first.version, first.version]);

        // The feed has the update's start, in words, on the service's subject.
        await page.click('#tab-events');
        const started = page.locator('#feed li[data-type="io.orch.lifecycle.rollout_started.v1"]');
        await started.waitFor({ timeout: WAIT });
        assert.equal(await started.getAttribute('data-subject'), `${env.prefix}.evt.lifecycle.roll.rollout_started`);
        assert.equal(await textOf(started.locator('.ev-kind')), 'lifecycle.rollout_started');
        assert.equal(await textOf(started.locator('.ev-summary')), `roll: rolling update ${from} → ${to} started: 2 replicas, 1 at a time; reverts to ${from} if it fails`);

        // A version that crashes, without revert: its update fails and stays shown, with why.
        const third = await apply(roll('3', '1h', '2h', { crash: true }));
        await page.click('#tab-stack');
        const failed = page.locator(`#rollouts-table tr.rollout.failed[data-service="roll"][data-version="${third.version}"]`);
        await failed.waitFor({ timeout: WAIT });
        assert.match(await textOf(failed.locator('td.progress')), new RegExp(`^failed: roll-0 crashed on version ${third.version}: `));
        assert.equal(await textOf(failed.locator('td.revert')), 'not reverted');

        // The small stack again: roll leaves it, its update with it, and the card goes.
        await applyStack(env);
        restored = true;
        await page.click('#tab-stack');
        await page.locator('#rollouts-card').waitFor({ state: 'hidden', timeout: WAIT });
        assert.equal(await page.locator('#rollouts-table').count(), 0);
        assert.equal(await page.locator('#errors').isVisible(), false, 'no error strip');
        assert.deepEqual(problems.page, []);
        assert.deepEqual(unexpected(problems), []);
      });
    } finally {
      // The tests after this one expect the small stack.
      if (!restored) await applyStack(env);
    }
  });

  test('the manifest history: versions with who applied them, the diff of the last apply, a rollback asked twice', async () => {
    const withHist = `${STACK_TOML}
[services.hist]
command = ${JSON.stringify(env.sleeper)}
args = ["--ready-after", "0ms"]
grace_period = "1s"
env = { MODE = "history" }
`;
    let restored = false;
    try {
      const before = (await env.viewer('GET', '/api/v1/stack/versions?limit=1')).body.versions[0].version;
      const res = await env.admin('PUT', '/api/v1/stack?source=history-test', withHist, { contentType: 'application/toml' });
      assert.equal(res.status, 202, res.text);
      const added = res.body.version;
      await withPage(env.adminToken, async ({ page, problems }) => {
        await ready(page);
        await page.click('#tab-stack');
        const newest = page.locator(`#versions tr[data-version="${added}"]`);
        await newest.waitFor({ timeout: WAIT });
        assert.equal(await newest.getAttribute('class'), 'current');
        assert.equal(await textOf(newest.locator('td.source')), 'history-test');
        assert.equal(await textOf(newest.locator('td.principal')), 'key:test-admin');
        // By default the diff of the last apply: hist added.
        const row = page.locator('#manifest-diff tr.added[data-service="hist"]');
        await row.waitFor({ timeout: WAIT });
        assert.match(await textOf(page.locator('#manifest-diff h3')), new RegExp(`^Changes from v${before} to v${added}$`));

        // Roll back to the version before: the first click only asks.
        const button = page.locator(`#versions button.rollback[data-version="${before}"]`);
        await button.click();
        await page.locator(`#versions button.rollback.danger[data-version="${before}"]`, { hasText: `Confirm: roll back to v${before}` }).waitFor({ timeout: WAIT });
        assert.equal((await env.viewer('GET', '/api/v1/stack/versions?limit=1')).body.versions[0].version, added, 'nothing applied yet');
        await page.locator(`#versions button.rollback[data-version="${before}"]`).click();
        await page.locator('#history-notice', { hasText: `Rolled back to v${before}: applied as v${added + 1}` }).waitFor({ timeout: WAIT });
        restored = true;
        const rolled = page.locator(`#versions tr.current[data-version="${added + 1}"]`);
        await rolled.waitFor({ timeout: WAIT });
        assert.equal(await textOf(rolled.locator('td.source')), `rollback to v${before}`);
        // The diff follows the newest apply: hist removed.
        await page.locator('#manifest-diff tr.removed[data-service="hist"]').waitFor({ timeout: WAIT });
        await waitFor('the stack without hist', async () => {
          const view = (await env.viewer('GET', '/api/v1/stack')).body;
          return view.version === added + 1 && !view.services.some((sv) => sv.name === 'hist');
        }, WAIT);
        assert.equal(await page.locator('#errors').isVisible(), false, 'no error strip');
        assert.deepEqual(problems.page, []);
        assert.deepEqual(unexpected(problems), []);
      });
    } finally {
      if (!restored) await applyStack(env);
    }
  });

  test('a service’s logs: its last lines, then a line it prints appears without a reload, with a filter', async () => {
    const withTalker = `${STACK_TOML}
[services.talker]
command = "/bin/sh"
args = ["-c", "i=0; while true; do echo \\"tick $i\\"; echo \\"warn $i\\" >&2; i=$((i+1)); sleep 0.2; done"]
grace_period = "1s"
`;
    let restored = false;
    try {
      const res = await env.admin('PUT', '/api/v1/stack?source=logs-test', withTalker, { contentType: 'application/toml' });
      assert.equal(res.status, 202, res.text);
      await waitFor('talker ready', async () => {
        const view = (await env.viewer('GET', '/api/v1/stack')).body;
        return view.services.some((sv) => sv.name === 'talker' && sv.state === 'ready');
      }, WAIT);
      await withPage(env.viewerToken, async ({ page, problems }) => {
        await ready(page, 'viewer');
        await page.click('#tab-logs');
        await page.locator('#logs-service option[value="talker"]').waitFor({ state: 'attached', timeout: WAIT });
        // Only stdout lines containing "tick".
        await page.selectOption('#logs-stream', 'stdout');
        await page.fill('#logs-filter', 'tick');
        await page.selectOption('#logs-service', 'talker');
        await page.locator('#logs-status[data-state="following"]').waitFor({ timeout: WAIT });
        const lines = page.locator('#log-lines li.log-line');
        await lines.first().waitFor({ timeout: WAIT });
        const number = async () => Number((await textOf(lines.last().locator('.log-text'))).replace('tick ', ''));
        const before = await number();
        // A line printed after the page showed the others appears without a reload.
        await waitFor('a newer line appears live', async () => (await number()) > before + 2, WAIT);
        const texts = await page.locator('#log-lines .log-text').allTextContents();
        assert.ok(texts.every((t) => /^tick \d+$/.test(t)), `only the filtered stream and text: ${texts.slice(0, 5)}`);
        assert.equal(await lines.last().getAttribute('data-unit'), 'talker');
        assert.equal(await page.locator('#log-lines li[data-stream="stderr"]').count(), 0);
        assert.deepEqual(problems.page, []);
        assert.deepEqual(unexpected(problems), []);
      });
      await applyStack(env);
      restored = true;
    } finally {
      if (!restored) await applyStack(env);
    }
  });

  test('the config store: keys under a prefix, a key’s history, its form, and a change made elsewhere arriving live', async () => {
    const key = `dash${suffix()}.mode`;
    const first = await env.admin('PUT', `/api/v1/config/${key}`, { value: 'blue' });
    assert.equal(first.status, 200, first.text);
    await withPage(env.adminToken, async ({ page, problems }) => {
      await ready(page);
      await page.click('#tab-config');
      await page.fill('#config-prefix', key.split('.')[0]);
      const row = page.locator(`#config-list tr[data-key="${key}"]`);
      await row.waitFor({ timeout: WAIT });
      assert.equal(await textOf(row.locator('td.value')), '"blue"');
      await row.locator('button.config-key').click();
      await page.locator('#config-selected', { hasText: key }).waitFor({ timeout: WAIT });
      assert.equal(await textOf(page.locator('.config-history tr[data-op="put"] td.principal')), 'key:test-admin');
      // The form to set it is there for an admin, for the revision shown.
      assert.equal(await page.locator('#config-value').inputValue(), '"blue"');
      assert.equal(await page.locator('#config-save').count(), 1);
      // A change made elsewhere arrives by its event.
      const elsewhere = await env.admin('PUT', `/api/v1/config/${key}`, { value: 'red' });
      assert.equal(elsewhere.status, 200, elsewhere.text);
      await waitFor('the change made elsewhere shows', async () => (await textOf(row.locator('td.value'))) === '"red"', WAIT);
      assert.deepEqual(problems.page, []);
      assert.deepEqual(unexpected(problems), []);
    });
  });

  test('the API reference page renders the OpenAPI document offline', async () => {
    const doc = await fetch(`${env.base}/api/v1/openapi.json`);
    assert.equal(doc.status, 200, 'the orchestrator serves /api/v1/openapi.json (the page renders it)');
    assert.match((await doc.json()).openapi ?? '', /^3\./, 'an OpenAPI 3 document');
    await withPage(null, async ({ page, problems }) => {
      const requests = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.reload();
      await page.locator('.swagger-ui .info .title').waitFor({ timeout: WAIT });
      assert.notEqual(await textOf(page.locator('.swagger-ui .info .title')), '');
      await page.locator('.swagger-ui .opblock').first().waitFor({ timeout: WAIT });
      assert.ok((await page.locator('.swagger-ui .opblock').count()) > 5, 'operations listed');
      for (const url of requests) assert.ok(url.startsWith(env.base) || url.startsWith('data:'), `request to another origin: ${url}`);
      assert.deepEqual(problems.page, []);
      assert.deepEqual(problems.console, [], 'no console error or warning (CSP included)');
    }, '/api-docs/');
  });
  // Last: it restarts the orchestrator.
  test('reconnects after a restart, and resumes without loss or repeats after being dropped', async () => {
    // Restart with a small per-client queue and a short stall (where this build has the flag), so
    // a client that stops reading is dropped quickly.
    const flags = ['--ws-buffer', '2', ...(env.supports('--ws-stall') ? ['--ws-stall', '200ms'] : [])];
    // The page talks to the orchestrator through a proxy, so the test can stop it reading.
    const proxy = await startProxy(new URL(env.base).port);
    const sockets = [];
    const watch = (page) =>
      page.on('websocket', (ws) => {
        const s = { url: new URL(ws.url()), frames: [] };
        sockets.push(s);
        ws.on('framereceived', (f) => {
          try {
            s.frames.push(JSON.parse(String(f.payload)));
          } catch {
            /* not JSON: not ours */
          }
        });
      });
    const opened = await openDashboard(browser, { ...env, base: proxy.base }, env.adminToken, '/', watch);
    const { page, problems } = opened;
    try {
      await ready(page);
      const before = `rst-${suffix()}`;
      await register({ id: `${before}-1`, name: before });
      await page.locator(`#services-table tr[data-instance="${before}-1"]`).waitFor({ timeout: WAIT });
      await page.evaluate(() => {
        window.__sameDocument = true;
      });
      const first = sockets[0];
      assert.ok(first, 'a WebSocket was opened');
      assert.equal(first.url.searchParams.get('token'), env.adminToken);
      assert.equal(first.url.searchParams.get('after'), null);
      await waitFor('the registration on the stream', async () => first.frames.some((f) => f.type === 'event' && f.event.subject === `${before}-1`), WAIT);

      // 1. The orchestrator restarts: the page says it is reconnecting, then resumes where it was.
      const restarted = env.restart(flags);
      await page.locator('#connection[data-state="reconnecting"]').waitFor({ timeout: WAIT });
      await restarted;
      await page.locator('#connection[data-state="live"]').waitFor({ timeout: 30_000 });
      const resumed = sockets.find((s) => s !== first && s.frames.some((f) => f.type === 'ready'));
      assert.ok(resumed, 'a new connection went live');
      const ids = first.frames.filter((f) => f.type === 'event').map((f) => f.event.id);
      assert.equal(resumed.url.searchParams.get('after'), ids.at(-1), 'it resumes after the last event received before the restart');
      assert.equal(resumed.frames.find((f) => f.type === 'ready').resumed, true);

      // 2. The page stops reading while large events (about 40 KiB: 64 metadata entries, the most
      // a registration takes) pile up: the server drops it, and it resumes after the last event it
      // got. How many events the socket buffers between them hold is the kernel's choice (it
      // sizes them by itself), so the test does not guess a count: it publishes until the server
      // reports the drop in its metrics, with a bound far past any buffer.
      const burst = `burst-${suffix()}`;
      const big = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`${'k'.repeat(120)}${String(i).padStart(2, '0')}`, 'x'.repeat(500)]));
      const droppedSoFar = async () => {
        const res = await env.viewer('GET', '/metrics');
        const m = /^orch_ws_dropped_total (\d+)$/m.exec(res.text);
        assert.ok(m, `orch_ws_dropped_total in /metrics:\n${res.text}`);
        return Number(m[1]);
      };
      const droppedBefore = await droppedSoFar();
      const BATCH = 40;
      // About 38 MiB, past the socket buffers of both ends (a kernel autotunes a receive buffer up
      // to net.ipv4.tcp_rmem's maximum, 32 MiB on common kernels), and within the services
      // view's 1000 rows.
      const MOST = 960;
      let n = 0;
      const live = sockets.length - 1;
      proxy.pause();
      try {
        while ((await droppedSoFar()) === droppedBefore) {
          assert.ok(n < MOST, `the server did not drop the page after ${n} events while it did not read`);
          await Promise.all(Array.from({ length: BATCH }, (_, i) => register({ id: `${burst}-${String(n + i).padStart(4, '0')}`, name: burst, metadata: big })));
          n += BATCH;
        }
      } finally {
        proxy.resume();
      }
      // Every registration of the burst reached the page exactly once, across its connections.
      const burstIds = () =>
        sockets
          .flatMap((s) => s.frames)
          .filter((f) => f.type === 'event' && f.event.type === 'io.orch.registry.registered.v1' && f.event.subject.startsWith(`${burst}-`))
          .map((f) => f.event.subject);
      await waitFor(`${n} registrations received`, async () => burstIds().length >= n, 60_000, 250);
      await page.waitForTimeout(500);
      const received = burstIds();
      assert.equal(received.length, n, 'no registration lost or received twice');
      assert.equal(new Set(received).size, n, 'each registration once');
      // The feed shows them (its newest 500 entries), each once.
      await page.click('#tab-events');
      const events = page.locator('#feed li[data-type="io.orch.registry.registered.v1"]', { hasText: `${burst}-` });
      const shown = await events.evaluateAll((els) => els.map((e) => e.dataset.id));
      assert.equal(new Set(shown).size, shown.length, 'no entry shown twice');
      const last = received.at(-1);
      assert.equal(await page.locator('#feed li[data-type="io.orch.registry.registered.v1"]', { hasText: last }).count(), 1, 'the newest registration is in the feed');
      if ((await page.locator('#feed li').count()) < 500) assert.equal(shown.length, n, 'the feed shows every registration');
      const drops = sockets.map((s, i) => [i, s.frames.find((f) => f.type === 'dropped')]).filter(([i, d]) => d && i >= live);
      const summary = sockets.map((s) => `${s.url.searchParams.get('after') ?? '-'}: ${s.frames.map((f) => f.type[0]).join('')}`).join('\n');
      assert.ok(drops.length >= 1, `the server dropped the page while it did not read; connections:\n${summary}`);
      for (const [i, d] of drops) {
        assert.equal(d.reason, 'slow_consumer');
        // The notice names the last event sent; when nothing was sent on that connection, the
        // page resumes after the last one it had.
        const lastSeen = sockets.slice(0, i + 1).flatMap((s) => s.frames.filter((f) => f.type === 'event')).at(-1)?.event.id;
        assert.ok(sockets[i + 1], `a connection after the drop of connection ${i}`);
        assert.equal(sockets[i + 1].url.searchParams.get('after'), d.resume_after ?? lastSeen, 'it resumes after the last event delivered');
      }
      await page.locator('#connection[data-state="live"]').waitFor({ timeout: WAIT });
      await page.click('#tab-services');
      await waitFor('the burst in the services view', async () => (await page.locator(`#services-table tbody[data-service="${burst}"] tr.instance`).count()) === n, WAIT);
      assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
      await page.locator('#errors').waitFor({ state: 'hidden', timeout: WAIT });
      assert.deepEqual(problems.page, []);
      // While the orchestrator was down the browser logged the failed connections; nothing else.
      for (const m of problems.console) {
        assert.match(m.text, /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|ERR_CONNECTION_CLOSED|ERR_SOCKET_NOT_CONNECTED|WebSocket connection to .* failed|status of (429|502|503)/, m.text);
      }
    } finally {
      await opened.context.close();
      await proxy.close();
    }
  });
});
