// The group of replicas (GET /api/v1/cluster): who leads, in which term and since when, and each
// replica's role, address and version; or, for one orchestrator alone, that it runs alone and how
// to run replicas. Also the header's short line: which replica answered and who leads.

import { h, fill } from '../dom';
import { ago, time } from '../format';
import type { ClusterView, ReplicaView } from '../types';
import { badge, emptyRow, muted } from './common';

const COLS = 6;

/** The roles in the order the table lists them: the leader first, the replicas gone last. */
const ROLE_ORDER = new Map<string, number>([
  ['leader', 0],
  ['standby', 1],
  ['gone', 2],
]);

function when(iso: string): HTMLElement {
  return h('span', { title: iso }, time(iso), ' ', muted(`(${ago(iso)})`));
}

function row(r: ReplicaView, view: ClusterView): HTMLTableRowElement {
  const leader = view.leader?.replica === r.name ? view.leader : null;
  const answered = view.answered_by === r.name;
  return h(
    'tr',
    { class: `replica${leader ? ' leader' : ''}`, 'data-replica': r.name, 'data-role': r.role },
    h(
      'td',
      { class: 'name' },
      h('strong', {}, r.name),
      answered ? ' ' : '',
      answered ? h('span', { class: 'badge flag answered', title: 'the replica this page talks to (a standby forwards what it does not answer itself to the leader)' }, 'answered') : '',
    ),
    h('td', { class: 'nowrap role-cell' }, badge('role', r.role, leader ? '★ leader' : r.role), leader ? muted(` term ${leader.term}`) : ''),
    h('td', { class: 'mono' }, r.http_url),
    h('td', { class: 'version' }, r.version || muted('—')),
    h('td', { class: 'nowrap started' }, when(r.started_at)),
    h('td', { class: 'nowrap seen' }, when(r.seen_at)),
  );
}

export function renderCluster(el: HTMLElement, view: ClusterView | null): void {
  if (!view) {
    fill(el, muted('Reading the group of replicas…'));
    return;
  }
  if (view.mode !== 'replicated') {
    fill(
      el,
      h(
        'div',
        { class: 'cluster-mode', id: 'cluster-mode', 'data-mode': 'single' },
        h('p', {}, h('strong', {}, 'One orchestrator runs alone'), ': it does all the work itself, and no standby takes over if it stops.'),
        h(
          'p',
          { class: 'muted' },
          'To run a group of replicas, start each orchestrator with ',
          h('code', {}, 'orchestrator serve --replica NAME'),
          ' (a name unique to each process) on the same PostgreSQL and NATS: one leads, the others stand by, forward requests to it and take over when it goes. See docs/architecture.md, “Leadership of replicas”.',
        ),
      ),
    );
    return;
  }
  const l = view.leader ?? null;
  const head = l
    ? h(
        'p',
        { class: 'cluster-leader', id: 'cluster-leader', 'data-leader': l.replica, 'data-term': String(l.term) },
        'Leader ',
        h('strong', {}, l.replica),
        ` · term ${l.term} · since `,
        when(l.since),
        ' · lease until ',
        h('span', { title: l.expires_at }, time(l.expires_at)),
      )
    : // The lease ran out and no replica claimed it yet; the standbys hold requests meanwhile.
      h('p', { class: 'cluster-leader failover', id: 'cluster-leader', 'data-leader': '' }, h('strong', {}, 'No leader: failover under way'), ' — requests wait until a standby takes the lease.');
  const sorted = [...view.replicas].sort((a, b) => (ROLE_ORDER.get(a.role) ?? 9) - (ROLE_ORDER.get(b.role) ?? 9) || a.name.localeCompare(b.name));
  const body = h('tbody', {}, ...sorted.map((r) => row(r, view)));
  if (!sorted.length) body.append(emptyRow(COLS, 'No replica has announced itself yet.'));
  fill(
    el,
    h(
      'div',
      { class: 'cluster-mode', id: 'cluster-mode', 'data-mode': 'replicated' },
      head,
      view.answered_by ? h('p', { class: 'muted', id: 'cluster-answered-by' }, 'This page is answered by replica ', h('strong', {}, view.answered_by), '.') : null,
    ),
    h(
      'div',
      { class: 'table-wrap' },
      h('table', { class: 'grid cluster-table', id: 'cluster-table' }, h('thead', {}, h('tr', {}, ...['Replica', 'Role', 'HTTP URL', 'Version', 'Started', 'Last seen'].map((t) => h('th', { scope: 'col' }, t)))), body),
    ),
  );
}

/** The header's line: "replica b · leader a (term 3)"; hidden for one orchestrator alone. */
export function renderClusterSummary(el: HTMLElement, view: ClusterView | null): void {
  if (!view || view.mode !== 'replicated') {
    el.hidden = true;
    el.replaceChildren();
    return;
  }
  el.hidden = false;
  const l = view.leader ?? null;
  el.dataset.leader = l?.replica ?? '';
  fill(
    el,
    view.answered_by ? `replica ${view.answered_by} · ` : '',
    l ? `leader ${l.replica} (term ${l.term})` : 'no leader: failover under way',
  );
  el.classList.toggle('failover', !l);
}
