// Services and their instances (GET /api/v1/services), with each service's effective priority
// and who changed it last and why (GET /api/v1/priorities and the services' histories).

import { h, on, fill } from '../dom';
import { ago, cut } from '../format';
import type { Instance, PriorityChange, PriorityView } from '../types';
import { badge, emptyRow, muted } from './common';

export interface ServicesModel {
  instances: Instance[] | null;
  /** More instances exist than were read. */
  truncated: boolean;
  priorities: Map<string, PriorityView>;
  /** The last change that moved each service's priority, when known. */
  lastChange: Map<string, PriorityChange>;
}

const HEALTH_ORDER: Record<string, number> = { passing: 0, warning: 1, critical: 2 };
const MAX_ROWS = 1000;
const COLS = 8;

function worst(instances: Instance[]): string {
  let w = 'passing';
  for (const i of instances) if ((HEALTH_ORDER[i.health] ?? 0) > (HEALTH_ORDER[w] ?? 0)) w = i.health;
  return w;
}

/** Whether an instance matches every word of the filter; "tag:", "name:", "health:" narrow a word. */
function matches(i: Instance, words: string[], health: string): boolean {
  if (health && i.health !== health) return false;
  for (const word of words) {
    const m = /^(tag|name|health|version|id):(.*)$/.exec(word);
    if (m) {
      const [, key, v] = m as unknown as [string, string, string];
      const ok =
        key === 'tag' ? i.tags.some((t) => t.toLowerCase().includes(v)) :
        key === 'name' ? i.name.includes(v) :
        key === 'health' ? i.health === v :
        key === 'version' ? i.version.toLowerCase().includes(v) :
        i.id.toLowerCase().includes(v);
      if (!ok) return false;
      continue;
    }
    const hay = [i.name, i.id, i.health, i.version, i.address, ...i.tags, ...Object.values(i.metadata)]
      .join('\n')
      .toLowerCase();
    if (!hay.includes(word)) return false;
  }
  return true;
}

export class ServicesView {
  readonly root: HTMLElement;
  private readonly body: HTMLElement;
  private readonly summary: HTMLElement;
  private query = '';
  private health = '';
  private model: ServicesModel = { instances: null, truncated: false, priorities: new Map(), lastChange: new Map() };

  constructor(private readonly openHistory: (service: string) => void) {
    const search = h('input', {
      type: 'search',
      id: 'service-filter',
      placeholder: 'Filter by name, tag, health, version… e.g. tag:blue',
      'aria-label': 'Filter services',
      autocomplete: 'off',
      spellcheck: 'false',
    });
    on(search, 'input', () => {
      this.query = search.value;
      this.render();
    });
    const select = h(
      'select',
      { id: 'health-filter', 'aria-label': 'Health' },
      h('option', { value: '' }, 'any health'),
      h('option', { value: 'passing' }, 'passing'),
      h('option', { value: 'warning' }, 'warning'),
      h('option', { value: 'critical' }, 'critical'),
    );
    on(select, 'change', () => {
      this.health = select.value;
      this.render();
    });
    this.summary = h('span', { class: 'summary' });
    this.body = h('div', { class: 'table-wrap' });
    this.root = h('div', { class: 'services' }, h('div', { class: 'toolbar' }, search, select, this.summary), this.body);
  }

  update(model: ServicesModel): void {
    this.model = model;
    this.render();
  }

  private render(): void {
    const all = this.model.instances;
    if (all === null) {
      fill(this.body, h('p', { class: 'empty' }, 'Loading services…'));
      this.summary.textContent = '';
      return;
    }
    const words = this.query.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = all.filter((i) => matches(i, words, this.health));
    const groups = new Map<string, Instance[]>();
    for (const i of shown.slice(0, MAX_ROWS)) {
      const g = groups.get(i.name);
      if (g) g.push(i);
      else groups.set(i.name, [i]);
    }
    const serviceCount = new Set(all.map((i) => i.name)).size;
    this.summary.textContent =
      `${shown.length} of ${all.length} instances · ${serviceCount} services` +
      (this.model.truncated ? ' (more exist; only the first pages are shown)' : '') +
      (shown.length > MAX_ROWS ? ` · first ${MAX_ROWS} shown` : '');

    const bodies: HTMLTableSectionElement[] = [];
    for (const name of [...groups.keys()].sort()) {
      const instances = groups.get(name)!.sort((a, b) => a.id.localeCompare(b.id));
      bodies.push(this.group(name, instances));
    }
    if (!bodies.length) {
      bodies.push(h('tbody', {}, emptyRow(COLS, all.length ? 'No instance matches the filter.' : 'No instance is registered.')));
    }
    fill(
      this.body,
      h(
        'table',
        { class: 'grid services-table', id: 'services-table' },
        h(
          'thead',
          {},
          h('tr', {}, ...['Service', 'Instance', 'Health', 'Version', 'Address', 'Tags · metadata', 'Priority', 'Last priority change'].map((t) => h('th', { scope: 'col' }, t))),
        ),
        ...bodies,
      ),
    );
  }

  private group(name: string, instances: Instance[]): HTMLTableSectionElement {
    const tbody = h('tbody', { class: 'service-group', 'data-service': name });
    const n = instances.length;
    instances.forEach((inst, idx) => {
      const tr = h('tr', { class: 'instance', 'data-instance': inst.id, 'data-health': inst.health });
      if (idx === 0) {
        const btn = on(h('button', { type: 'button', class: 'link service-name', title: `Priority history of ${name}` }, name), 'click', () =>
          this.openHistory(name),
        );
        tr.append(h('th', { scope: 'rowgroup', rowspan: n, class: 'service-cell' }, btn, h('div', {}, badge('health', worst(instances)), ' ', muted(`${n} inst.`))));
      }
      tr.append(
        h('td', { class: 'mono id' }, inst.id),
        this.healthCell(inst),
        h('td', { class: 'version' }, inst.version || muted('—')),
        h('td', { class: 'mono nowrap' }, `${inst.address}:${inst.port}`, ' ', muted(inst.protocol)),
        this.labels(inst),
      );
      if (idx === 0) {
        tr.append(this.priorityCell(name, n), this.changeCell(name, n));
      }
      tbody.append(tr);
    });
    return tbody;
  }

  private healthCell(inst: Instance): HTMLTableCellElement {
    const td = h('td', { class: 'health' }, badge('health', inst.health));
    if (inst.maintenance) td.append(' ', h('span', { class: 'badge flag', title: inst.maintenance.reason }, 'maintenance'));
    if (inst.flapping_since) td.append(' ', h('span', { class: 'badge flag' }, 'flapping'));
    const details: string[] = [];
    if (inst.lease !== 'passing') details.push(`lease ${inst.lease}`);
    for (const c of inst.checks ?? []) if (c.status !== 'passing') details.push(`${c.spec.id}: ${c.status}`);
    if (details.length) td.append(h('div', { class: 'small muted' }, cut(details.join(' · '), 80)));
    const title = (inst.checks ?? []).map((c) => `${c.spec.id} (${c.spec.kind}): ${c.status}${c.output ? ` — ${c.output}` : ''}`).join('\n');
    if (title) td.setAttribute('title', title);
    return td;
  }

  private labels(inst: Instance): HTMLTableCellElement {
    const td = h('td', { class: 'labels' });
    const items: HTMLElement[] = [];
    for (const t of inst.tags) items.push(h('span', { class: 'chip tag' }, t));
    for (const [k, v] of Object.entries(inst.metadata)) items.push(h('span', { class: 'chip meta', title: `${k}=${v}` }, `${k}=${cut(v, 40)}`));
    if (!items.length) td.append(muted('—'));
    const max = 8;
    td.append(...items.slice(0, max));
    if (items.length > max) td.append(muted(` +${items.length - max}`));
    return td;
  }

  private priorityCell(name: string, rows: number): HTMLTableCellElement {
    const p = this.model.priorities.get(name);
    const td = h('td', { rowspan: rows, class: 'priority', 'data-priority': p ? p.effective : 50 });
    if (!p) {
      // Not known to the priority book yet (it re-reads the registry's names every few
      // seconds); nothing was set for it, so it has the default (§13.1).
      td.append(h('strong', { class: 'effective' }, 50), h('div', { class: 'small muted' }, 'baseline 50 (default)'));
      return td;
    }
    td.append(h('strong', { class: 'effective' }, p.effective));
    const bits: string[] = [`baseline ${p.baseline} (${p.baseline_source})`];
    if (p.min !== 0 || p.max !== 100) bits.push(`bounds ${p.min}–${p.max}`);
    if (p.pinned) bits.push('pinned');
    td.append(h('div', { class: 'small muted' }, bits.join(' · ')));
    if (p.adjustment) {
      const a = p.adjustment;
      td.append(h('div', { class: 'small' }, `adjusted to ${a.requested} by ${a.source}`, a.expires_at ? ` until ${new Date(a.expires_at).toLocaleTimeString()}` : ''));
    }
    return td;
  }

  private changeCell(name: string, rows: number): HTMLTableCellElement {
    const td = h('td', { rowspan: rows, class: 'who' });
    const c = this.model.lastChange.get(name);
    const p = this.model.priorities.get(name);
    if (c) {
      td.append(
        h('div', {}, h('strong', {}, c.source), ' ', muted(`${c.action} · ${c.outcome} · ${ago(c.at)}`)),
        c.reason ? h('div', { class: 'reason' }, cut(c.reason, 140)) : muted('no reason given'),
      );
    } else if (p?.adjustment) {
      td.append(h('div', {}, h('strong', {}, p.adjustment.source), ' ', muted(ago(p.adjustment.at))), h('div', { class: 'reason' }, cut(p.adjustment.reason, 140)));
    } else if (p && p.baseline_source !== 'default') {
      td.append(muted(p.baseline_source === 'manifest' ? 'set by the manifest' : 'operator policy'));
    } else {
      td.append(muted('default, never changed'));
    }
    return td;
  }
}
