// Where each managed service runs (the services of GET /api/v1/stack/graph?format=json, as in
// GET /api/v1/stack, §12.7): its node, the service a replica belongs to, what it asked for, and
// the placement's sentence: why it runs where it runs, or why it waits for a node.

import { h, on, fill } from '../dom';
import { cpu, cut, mib } from '../format';
import type { StackGraph, StackService } from '../types';
import { muted } from './common';
import { stateClass } from './graph';

function resources(sv: StackService): HTMLTableCellElement {
  const r = sv.resources;
  if (!r || (!r.cpu && !r.memory)) return h('td', { class: 'resources' }, muted('—'));
  return h('td', { class: 'resources nowrap' }, `${cpu(r.cpu ?? 0)} · ${mib(r.memory ?? 0)}`);
}

function row(sv: StackService, openNode: (node: string) => void): HTMLTableRowElement {
  const node = sv.node ?? null;
  const placement = sv.placement ?? '';
  return h(
    'tr',
    { class: 'placed', 'data-service': sv.name, 'data-node': node ?? '', 'data-replica-of': sv.replica_of ?? '' },
    h('td', { class: 'name' }, h('strong', {}, sv.name)),
    h('td', { class: 'replica-of' }, sv.replica_of ? sv.replica_of : muted('—')),
    h('td', { class: 'state nowrap' }, h('span', { class: `badge ${stateClass(sv.state)}`, 'data-state': sv.state }, sv.state)),
    h(
      'td',
      { class: 'node nowrap' },
      node ? on(h('button', { type: 'button', class: 'link node-link', title: `Show the node ${node}` }, node), 'click', () => openNode(node)) : muted('waiting for a node'),
    ),
    resources(sv),
    h('td', { class: 'reason placement', title: placement }, placement ? cut(placement, 200) : muted('—')),
  );
}

/** Renders where each managed service runs; a node's name opens it in the Nodes view. */
export function renderPlacement(el: HTMLElement, graph: StackGraph | null, openNode: (node: string) => void): void {
  if (!graph || !graph.services.length) {
    fill(el, muted('No stack is applied.'));
    return;
  }
  const services = [...graph.services].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  const body = h('tbody', {}, ...services.map((sv) => row(sv, openNode)));
  fill(
    el,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'grid placement-table', id: 'placement-table' },
        h('thead', {}, h('tr', {}, ...['Service', 'Replica of', 'State', 'Node', 'Resources', 'Placement'].map((t) => h('th', { scope: 'col' }, t)))),
        body,
      ),
    ),
  );
}
