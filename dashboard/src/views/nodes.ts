// The nodes (GET /api/v1/nodes, §17.3): each node's status and since when; its CPU and memory
// (capacity, reserved, allocatable, allocated and free, with a bar of the allocatable share
// allocated); the use its agent measured; its labels; how its agent enforces limits; and the
// services whose processes run there, each replica with the service it belongs to and each with
// what it asked for (from the stack's view when the agent's report does not say).

import { h, s, fill } from '../dom';
import { ago, cpu, mib, percent, time } from '../format';
import type { Allocation, NodeList, NodeView, Resources, StackService } from '../types';
import { badge, emptyRow, muted } from './common';

const COLS = 8;

/** What each way of enforcing limits means, for the tooltip of the Limits column (§17.1). */
const ENFORCEMENT = new Map<string, string>([
  ['cgroup_v2', 'cgroup v2: the kernel enforces each service’s CPU and memory limits'],
  ['cgroup_v1', 'cgroup v1: the kernel enforces each service’s CPU and memory limits'],
  ['unlimited', 'no usable cgroups: services run without limits (the operator allowed it)'],
  ['none', 'no usable cgroups: services that ask for limits are refused'],
]);

/** A share (0-1) as a bar: an SVG track with its filled part; `high` past 90 %. */
export function bar(share: number, label: string): SVGSVGElement {
  const v = Number.isFinite(share) ? Math.min(1, Math.max(0, share)) : 0;
  return s(
    'svg',
    { class: `bar-meter${v > 0.9 ? ' high' : ''}`, viewBox: '0 0 100 6', width: 120, height: 6, preserveAspectRatio: 'none', role: 'img', 'aria-label': label },
    s('rect', { class: 'bar-track', x: 0, y: 0, width: 100, height: 6, rx: 2 }),
    s('rect', { class: 'bar-fill', x: 0, y: 0, width: Math.round(v * 1000) / 10, height: 6, rx: 2 }),
    s('title', {}, label),
  );
}

type Dimension = 'cpu' | 'memory';

function amount(dim: Dimension, r: Resources): string {
  return dim === 'cpu' ? cpu(r.cpu ?? 0) : mib(r.memory ?? 0);
}

/** One dimension of a node: what is allocated of what may be placed, with a bar, and below it
 * the capacity, the reservation and what is free. */
function resourceCell(n: NodeView, dim: Dimension): HTMLTableCellElement {
  const allocatable = n.allocatable[dim] ?? 0;
  const allocated = n.allocated[dim] ?? 0;
  const share = allocatable > 0 ? allocated / allocatable : allocated > 0 ? 1 : 0;
  const what = dim === 'cpu' ? 'CPU' : 'memory';
  return h(
    'td',
    {
      class: `resource ${dim}`,
      'data-capacity': n.capacity[dim] ?? 0,
      'data-allocatable': allocatable,
      'data-allocated': allocated,
      'data-free': n.free[dim] ?? 0,
    },
    h('div', { class: 'nowrap' }, h('strong', {}, amount(dim, n.allocated)), ' of ', amount(dim, n.allocatable), muted(' allocated')),
    bar(share, `${percent(share)} of the allocatable ${what} allocated`),
    h(
      'div',
      { class: 'small muted nowrap' },
      `capacity ${amount(dim, n.capacity)} · reserved ${amount(dim, n.reserved)} · `,
      h('span', { class: 'free' }, `free ${amount(dim, n.free)}`),
    ),
  );
}

function useCell(n: NodeView): HTMLTableCellElement {
  const line = (what: string, share: number) =>
    h('div', { class: 'nowrap use-line' }, h('span', { class: 'use-label' }, what), ' ', bar(share, `${what}: ${percent(share)} used`), ' ', percent(share));
  return h('td', { class: 'use', title: 'measured by the agent at its last report' }, line('CPU', n.cpu_used), line('memory', n.memory_used));
}

function servicesCell(n: NodeView, managed: Map<string, StackService>): HTMLTableCellElement {
  const td = h('td', { class: 'node-services' });
  if (!n.allocations.length) {
    td.append(muted(n.status === 'down' ? 'nothing reported' : 'nothing runs here'));
    return td;
  }
  const sorted = [...n.allocations].sort((a, b) => a.service.localeCompare(b.service));
  td.append(...sorted.map((a) => allocation(a, managed.get(a.service))));
  return td;
}

function allocation(a: Allocation, sv: StackService | undefined): HTMLElement {
  const of = sv?.replica_of ?? null;
  const reported = (a.resources.cpu ?? 0) || (a.resources.memory ?? 0) ? a.resources : null;
  const r = reported ?? sv?.resources ?? null;
  const asked = r && ((r.cpu ?? 0) || (r.memory ?? 0)) ? ` · ${cpu(r.cpu ?? 0)} · ${mib(r.memory ?? 0)}` : '';
  return h(
    'div',
    { class: 'allocation nowrap', 'data-service': a.service, title: asked ? 'what it asked for' : 'it asked for no resources' },
    h('strong', {}, a.service),
    of ? muted(` of ${of}`) : '',
    ' ',
    muted(`pid ${a.pid}${asked}`),
  );
}

function row(n: NodeView, managed: Map<string, StackService>, selected: string | null): HTMLTableRowElement {
  const labels = Object.entries(n.labels ?? {});
  return h(
    'tr',
    { class: `node-row${n.name === selected ? ' selected' : ''}`, 'data-node': n.name, 'data-status': n.status },
    h(
      'td',
      { class: 'name' },
      h('strong', {}, n.name),
      h('div', { class: 'small muted', title: `agent started ${n.agent_started}` }, `agent ${n.agent_version || '?'} · started ${ago(n.agent_started)}`),
    ),
    h(
      'td',
      { class: 'status nowrap' },
      badge('node', n.status),
      h('div', { class: 'small muted', title: n.since }, `since ${time(n.since)}`),
      h('div', { class: 'small muted', title: n.last_seen }, `last report ${ago(n.last_seen)}`),
    ),
    resourceCell(n, 'cpu'),
    resourceCell(n, 'memory'),
    useCell(n),
    h('td', { class: 'labels' }, ...(labels.length ? labels.map(([k, v]) => h('span', { class: 'chip meta', title: `${k}=${v}` }, `${k}=${v}`)) : [muted('—')])),
    h('td', { class: 'enforcement nowrap', title: ENFORCEMENT.get(n.enforcement) ?? '' }, n.enforcement),
    servicesCell(n, managed),
  );
}

/**
 * Renders the nodes. `managed` are the stack's services by name, so that the services of a node
 * say which service each replica belongs to (`api-1` of `api`) and what it asked for; `selected`
 * is the node chosen elsewhere (a service's node in the Stack view), marked.
 */
export function renderNodes(el: HTMLElement, list: NodeList | null, managed: Map<string, StackService>, selected: string | null = null): void {
  if (!list) {
    fill(el, muted('Reading the nodes…'));
    return;
  }
  const nodes = [...list.nodes].sort((a, b) => a.name.localeCompare(b.name));
  const down = nodes.filter((n) => n.status !== 'ready').length;
  const body = h('tbody', {}, ...nodes.map((n) => row(n, managed, selected)));
  if (!nodes.length) {
    body.append(emptyRow(COLS, 'No node has reported yet. Each agent (the orchestrator’s embedded one, or orchestrator agent --node NAME) reports its node every few seconds.'));
  }
  fill(
    el,
    h('p', { class: 'muted', id: 'nodes-summary' }, `${nodes.length} node${nodes.length === 1 ? '' : 's'} · ${nodes.length - down} ready · ${down} down`),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'grid nodes-table', id: 'nodes-table' },
        h('thead', {}, h('tr', {}, ...['Node', 'Status', 'CPU', 'Memory', 'Measured use', 'Labels', 'Limits', 'Services running there'].map((t) => h('th', { scope: 'col' }, t)))),
        body,
      ),
    ),
  );
}
