// The config store (protocol.md §18): keys under a prefix with their values and revisions; a key's
// recorded changes (who, when, old and new); and, for operators, setting a key with
// compare-and-set on the revision shown (a change made meanwhile is refused, not overwritten).
// Changes arrive as `config` events, which make the list be read again.

import { ApiError, getJson, putJson } from '../api';
import { h, fill, on } from '../dom';
import { ago } from '../format';
import type { ConfigChange, ConfigHistory, ConfigList, Role } from '../types';
import { muted, table } from './common';

function message(e: unknown): string {
  const field = e instanceof ApiError && e.field ? ` [${e.field}]` : '';
  return `${e instanceof Error ? e.message : String(e)}${field}`;
}

function json(v: unknown): string {
  return v === undefined || v === null ? '' : JSON.stringify(v);
}

export class ConfigView {
  readonly root: HTMLElement;
  private readonly prefix = h('input', { type: 'search', id: 'config-prefix', placeholder: 'prefix (web, web.db)', 'aria-label': 'Prefix' }) as HTMLInputElement;
  private readonly list = h('div', { id: 'config-list' });
  private readonly detail = h('div', { id: 'config-detail' });
  private role: Role | 'unknown' = 'unknown';
  private selected: string | null = null;
  /** The form of the selected key, for the revision it was made for. */
  private editing: { mark: string; el: HTMLElement } | null = null;
  private timer: number | undefined;

  constructor(private readonly host: { reload: (...names: string[]) => void }) {
    on(this.prefix, 'input', () => {
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => this.host.reload('config'), 300);
    });
    this.root = h(
      'div',
      { class: 'split' },
      h('section', { class: 'card' }, h('h2', {}, 'Config keys'), h('div', { class: 'toolbar' }, this.prefix), this.list),
      h('section', { class: 'card' }, h('h2', {}, 'Key'), this.detail),
    );
    fill(this.detail, muted('Choose a key.'));
  }

  setRole(role: Role | 'unknown'): void {
    this.role = role;
  }

  private mayWrite(): boolean {
    return this.role === 'operator' || this.role === 'admin' || this.role === 'unknown';
  }

  /** Reads the keys under the prefix typed (the loader `config`), and the selected key's history. */
  async load(): Promise<void> {
    const prefix = this.prefix.value.trim();
    const { body } = await getJson<ConfigList>(`/config?prefix=${encodeURIComponent(prefix)}`);
    this.renderList(body);
    if (this.selected) await this.loadKey(this.selected);
  }

  private renderList(list: ConfigList): void {
    if (!list.entries.length) {
      fill(this.list, muted(list.prefix ? `No key under ${list.prefix}.` : 'No key yet.'));
      return;
    }
    const body = h('tbody');
    for (const e of list.entries) {
      const name = on(h('button', { type: 'button', class: 'link config-key' }, e.key), 'click', () => void this.loadKey(e.key));
      body.append(
        h(
          'tr',
          { 'data-key': e.key, class: e.key === this.selected ? 'selected' : '' },
          h('td', {}, name),
          h('td', { class: 'mono value' }, json(e.value)),
          h('td', { class: 'num revision' }, String(e.revision)),
          h('td', { class: 'nowrap', title: e.updated_at }, ago(e.updated_at)),
        ),
      );
    }
    fill(this.list, h('div', { class: 'table-wrap' }, table('grid config-table', ['Key', 'Value', 'Revision', 'Updated'], body)), list.truncated ? muted('More keys: narrow the prefix.') : '');
  }

  private async loadKey(key: string): Promise<void> {
    this.selected = key;
    let history: ConfigHistory;
    try {
      history = (await getJson<ConfigHistory>(`/config/${encodeURIComponent(key)}/history`)).body;
    } catch (e) {
      fill(this.detail, h('p', { class: 'problem', role: 'alert' }, message(e)));
      return;
    }
    const newest = history.changes[0];
    const current = newest && newest.op !== 'delete' ? newest : null;
    const parts: (HTMLElement | string)[] = [h('h3', { id: 'config-selected' }, key)];
    if (this.mayWrite()) {
      // A reading again for another change keeps what is being typed, unless the key moved on.
      const mark = `${key}@${current?.revision ?? 0}`;
      if (this.editing?.mark !== mark) this.editing = { mark, el: this.editor(key, current) };
      parts.push(this.editing.el);
    }
    const rows = history.changes.map((c: ConfigChange) =>
      h(
        'tr',
        { 'data-revision': c.revision, 'data-op': c.op },
        h('td', { class: 'num' }, String(c.revision)),
        h('td', {}, c.op, c.reverted_to ? muted(` to ${c.reverted_to}`) : ''),
        h('td', { class: 'principal' }, c.principal),
        h('td', { class: 'nowrap', title: c.at }, ago(c.at)),
        h('td', { class: 'mono old' }, json(c.previous)),
        h('td', { class: 'mono new' }, json(c.value)),
      ),
    );
    parts.push(h('div', { class: 'table-wrap' }, table('grid config-history', ['Rev', 'Change', 'By', 'When', 'Before', 'After'], h('tbody', {}, ...rows))));
    fill(this.detail, ...parts);
  }

  /** Set the key: the value as JSON (text that is not JSON is taken as a string), only if its
   * revision is still the one shown. */
  private editor(key: string, current: ConfigChange | null): HTMLElement {
    const input = h('input', { type: 'text', id: 'config-value', value: current ? json(current.value) : '', 'aria-label': 'New value (JSON)' }) as HTMLInputElement;
    const problem = h('span', { class: 'problem', id: 'config-problem', role: 'alert' });
    const save = on(h('button', { type: 'button', id: 'config-save' }, 'Set'), 'click', async () => {
      let value: unknown;
      try {
        value = JSON.parse(input.value);
      } catch {
        value = input.value;
      }
      try {
        await putJson(`/config/${encodeURIComponent(key)}`, { value, revision: current?.revision ?? 0 });
        fill(problem);
      } catch (e) {
        fill(problem, message(e));
      }
      this.host.reload('config');
    });
    return h('div', { class: 'toolbar' }, input, save, muted(current ? ` if still revision ${current.revision}` : ' (a new key)'), problem);
  }
}
