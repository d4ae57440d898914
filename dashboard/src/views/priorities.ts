// Priorities (GET /api/v1/priorities) and the change history of one service
// (GET /api/v1/priorities/{service}?history=50), §13.

import { h, on, fill } from '../dom';
import { ago, cut, time } from '../format';
import type { PriorityChange, PriorityDetail, PriorityList } from '../types';
import { badge, emptyRow, muted } from './common';

export const HISTORY = 50;

export class PrioritiesView {
  readonly root: HTMLElement;
  private readonly guard: HTMLElement;
  private readonly list: HTMLElement;
  private readonly select: HTMLSelectElement;
  private readonly history: HTMLElement;
  private known: string[] = [];
  selected: string | null = null;

  constructor(private readonly onSelect: (service: string) => void) {
    this.guard = h('div', { class: 'guard', id: 'priority-guard' });
    this.list = h('div', { class: 'table-wrap' });
    this.select = h('select', { id: 'history-service', 'aria-label': 'Service' });
    on(this.select, 'change', () => {
      if (this.select.value) this.onSelect(this.select.value);
    });
    this.history = h('div', { class: 'table-wrap', id: 'priority-history' }, muted('Pick a service to see its history.'));
    this.root = h(
      'div',
      { class: 'priorities' },
      this.guard,
      h('div', { class: 'split' },
        h('div', { class: 'pane' }, h('h2', {}, 'Effective priorities'), this.list),
        h('div', { class: 'pane' }, h('h2', {}, 'History of ', this.select, ` (last ${HISTORY})`), this.history),
      ),
    );
  }

  updateList(data: PriorityList): void {
    const g = data.guard;
    if (g?.holding) {
      fill(this.guard, h('strong', {}, 'Mass-change guard holding'), ` since ${time(g.since)} until ${time(g.until)}: engine changes are held (${g.held.join(', ') || 'none yet'}). An operator can release them.`);
      this.guard.className = 'guard holding';
    } else if (g) {
      fill(this.guard, `Mass-change guard: ${g.changed_in_window} of at most ${g.limit} services moved by engines within the window.`);
      this.guard.className = 'guard';
    }
    this.known = data.priorities.map((p) => p.service);
    this.renderOptions();
    const body = h('tbody');
    for (const p of data.priorities) {
      const tr = h('tr', { 'data-service': p.service, class: p.service === this.selected ? 'selected' : '' });
      const btn = on(h('button', { type: 'button', class: 'link' }, p.service), 'click', () => this.onSelect(p.service));
      tr.append(
        h('td', {}, btn),
        h('td', { class: 'num' }, h('strong', {}, p.effective)),
        h('td', { class: 'nowrap' }, `${p.baseline} `, muted(p.baseline_source)),
        h('td', { class: 'nowrap' }, `${p.min}–${p.max} `, p.pinned ? h('span', { class: 'badge flag' }, 'pinned') : ''),
        h('td', {}, p.adjustment ? h('span', {}, `${p.adjustment.requested} by `, h('strong', {}, p.adjustment.source), h('div', { class: 'reason' }, cut(p.adjustment.reason, 120))) : muted('—')),
        h('td', { class: 'nowrap', title: p.updated_at ?? '' }, p.updated_at ? ago(p.updated_at) : muted('never')),
      );
      body.append(tr);
    }
    if (!data.priorities.length) body.append(emptyRow(6, 'No known service yet.'));
    fill(
      this.list,
      h('table', { class: 'grid', id: 'priorities-table' }, h('thead', {}, h('tr', {}, ...['Service', 'Effective', 'Baseline', 'Bounds', 'Engine adjustment', 'Changed'].map((t) => h('th', { scope: 'col' }, t)))), body),
    );
  }

  /** Marks the service as selected (the app loads its history). */
  choose(service: string): void {
    this.selected = service;
    this.renderOptions();
    for (const tr of this.list.querySelectorAll('tr[data-service]')) {
      tr.classList.toggle('selected', tr.getAttribute('data-service') === service);
    }
    fill(this.history, muted(`Loading the history of ${service}…`));
  }

  updateHistory(detail: PriorityDetail | null, error: string | null): void {
    if (!detail) {
      fill(this.history, error ? h('p', { class: 'problem' }, error) : muted('Pick a service to see its history.'));
      return;
    }
    const p = detail.priority;
    const head = h(
      'p',
      { class: 'history-head' },
      `${p.service}: effective `,
      h('strong', {}, p.effective),
      ` · baseline ${p.baseline} (${p.baseline_source}) · bounds ${p.min}–${p.max}${p.pinned ? ' · pinned' : ''}`,
    );
    const body = h('tbody');
    for (const c of detail.history) body.append(this.row(c));
    if (!detail.history.length) body.append(emptyRow(7, 'No change was ever asked for this service.'));
    fill(
      this.history,
      head,
      h('table', { class: 'grid history', id: 'history-table', 'data-service': p.service }, h('thead', {}, h('tr', {}, ...['Time', 'Action', 'Value', 'Outcome', 'Source', 'Reason', 'Detail'].map((t) => h('th', { scope: 'col' }, t)))), body),
    );
  }

  private row(c: PriorityChange): HTMLTableRowElement {
    const value = c.previous === c.effective ? `${c.effective}` : `${c.previous} → ${c.effective}`;
    return h(
      'tr',
      { 'data-change': c.id, 'data-outcome': c.outcome },
      h('td', { class: 'nowrap', title: c.at }, time(c.at)),
      h('td', {}, c.action),
      h('td', { class: 'nowrap' }, value, c.requested !== undefined && c.requested !== c.effective ? muted(` (asked ${c.requested})`) : ''),
      h('td', {}, badge('outcome', c.outcome), c.count ? h('span', { class: 'small', 'data-count': String(c.count), title: 'requests this record stands for' }, ` ×${c.count}`) : ''),
      h('td', {}, c.source, c.principal ? h('div', { class: 'small', 'data-principal': c.principal, title: 'who asked, as authenticated' }, muted(c.principal)) : ''),
      h('td', { class: 'reason' }, c.reason || muted('—')),
      h('td', { class: 'small' }, [c.guardrail, c.detail, c.expires_at ? `expires ${time(c.expires_at)}` : ''].filter(Boolean).join(' · ')),
    );
  }

  private renderOptions(): void {
    const names = [...new Set([...(this.selected ? [this.selected] : []), ...this.known])].sort();
    const opts = [h('option', { value: '' }, '— service —'), ...names.map((n) => h('option', { value: n }, n))];
    fill(this.select, ...opts);
    this.select.value = this.selected ?? '';
  }
}
