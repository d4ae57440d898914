// The rolling updates in progress, and failed ones until a newer version supersedes them (the
// `rollouts` of GET /api/v1/stack, protocol.md §12.10): a changed service
// with an `update` block has its replicas replaced a batch at a time, each batch healthy for a
// while before the next begins; a batch that crashes or is late fails the update, which then
// applies the last good version again unless it may not revert.

import { h, fill } from '../dom';
import { ago, cut } from '../format';
import type { Rollout, StackView } from '../types';
import { muted } from './common';

/** Replicas by name, in the order given; a service may have hundreds, so the cell is cut and the
 * whole list is in its title. */
function units(cls: string, names: string[], none: string): HTMLTableCellElement {
  if (!names.length) return h('td', { class: cls }, muted(none));
  const all = names.join(', ');
  return h('td', { class: cls, title: all }, cut(all, 200));
}

/** How far it got, or, for a failed update (which stays until a newer version supersedes it),
 * why it failed. */
function progress(r: Rollout, total: number): HTMLTableCellElement {
  const attrs = { 'data-replaced': r.replaced.length, 'data-total': total };
  if (r.reason) {
    return h('td', { class: 'progress reason', title: r.reason, ...attrs }, `failed: ${cut(r.reason, 200)}`);
  }
  return h(
    'td',
    { class: 'progress nowrap', ...attrs },
    `${r.replaced.length} of ${total} replaced`,
    muted(` · ${r.max_parallel} at a time`),
  );
}

function row(r: Rollout): HTMLTableRowElement {
  const total = r.replaced.length + r.batch.length + r.remaining.length;
  // revert_to may be absent or, as the document allows, null: either way it does not revert.
  const revert = typeof r.revert_to === 'number' ? r.revert_to : null;
  const failed = Boolean(r.reason);
  const ifItFails = failed
    ? revert !== null ? `reverting to v${revert}` : muted('not reverted')
    : revert !== null ? `reverts to v${revert}` : muted('no revert');
  return h(
    'tr',
    {
      class: failed ? 'rollout failed' : 'rollout',
      'data-service': r.service,
      'data-version': r.version,
      'data-from-version': r.from_version,
    },
    h('td', { class: 'name' }, h('strong', {}, r.service)),
    h('td', { class: 'versions nowrap' }, `v${r.from_version} → v${r.version}`),
    progress(r, total),
    units('batch', r.batch, 'none yet'),
    units('remaining', r.remaining, 'none'),
    h('td', { class: 'revert nowrap' }, ifItFails),
    h('td', { class: 'started nowrap', title: r.started_at }, ago(r.started_at)),
  );
}

/** Renders the rolling updates in progress; returns how many there are, so that the caller can
 * hide the whole card when there is none (they are rare, and short-lived). */
export function renderRollouts(el: HTMLElement, view: StackView | null): number {
  const rollouts = [...(view?.rollouts ?? [])].sort((a, b) => a.service.localeCompare(b.service, undefined, { numeric: true }));
  if (!rollouts.length) {
    fill(el, muted('No rolling update in progress.'));
    return 0;
  }
  fill(
    el,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'grid rollouts-table', id: 'rollouts-table' },
        h(
          'thead',
          {},
          h('tr', {}, ...['Service', 'Version', 'Progress', 'Batch', 'Remaining', 'If it fails', 'Started'].map((t) => h('th', { scope: 'col' }, t))),
        ),
        h('tbody', {}, ...rollouts.map(row)),
      ),
    ),
  );
  return rollouts.length;
}
