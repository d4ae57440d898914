// Manifest history (GET /api/v1/stack/versions, /stack/diff, POST …/rollback; protocol.md
// §12.11): every applied version with who applied it, when and from where; the difference between
// two, service by service and field by field; and a rollback to one (a new version equal to it),
// asked twice so that a stray click replaces nothing. A rollback replaces the stack, so it is for
// admins; the server decides, the button only says so.

import { ApiError, getJson, postJson } from '../api';
import { h, fill, on } from '../dom';
import { ago } from '../format';
import type { ManifestDiff, ManifestVersions, Role, StackApplied } from '../types';
import { muted, table } from './common';

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A field's value as the manifest would read it; `unset` where the version does not set it. */
function value(v: unknown): HTMLElement {
  return v === undefined || v === null ? muted('unset') : h('code', {}, JSON.stringify(v));
}

export class HistoryView {
  readonly root: HTMLElement;
  private readonly list = h('div', { class: 'versions', id: 'versions' });
  private readonly diffEl = h('div', { class: 'diff', id: 'manifest-diff' });
  private readonly notice = h('p', { class: 'notice', id: 'history-notice', role: 'status', hidden: true });
  private versions: ManifestVersions | null = null;
  private role: Role | 'unknown' = 'unknown';
  /** The two versions compared: `from` (older) and `to`. */
  private from: number | null = null;
  private to: number | null = null;
  /** Whether the reader chose the versions compared (else they follow the newest apply). */
  private picked = false;
  /** The version whose rollback waits for its confirmation. */
  private confirming: number | null = null;
  private busy = false;

  constructor(private readonly host: { reload: (...names: string[]) => void }) {
    this.root = h('section', { class: 'card', id: 'history-card' }, h('h2', {}, 'Manifest history'), this.notice, this.list, this.diffEl);
  }

  setRole(role: Role | 'unknown'): void {
    this.role = role;
    this.render();
  }

  private mayRollBack(): boolean {
    return this.role === 'admin' || this.role === 'unknown';
  }

  update(versions: ManifestVersions): void {
    this.versions = versions;
    const [newest, previous] = versions.versions;
    // Until two are picked, the newest version against the one before it: what the last apply
    // changed, following each new apply.
    if (!this.picked && newest && previous && (this.to !== newest.version || this.from !== previous.version)) {
      this.to = newest.version;
      this.from = previous.version;
      void this.loadDiff();
    }
    this.render();
  }

  private render(): void {
    const page = this.versions;
    if (!page || !page.versions.length) {
      fill(this.list, muted('No manifest applied yet.'));
      return;
    }
    const body = h('tbody');
    for (const v of page.versions) {
      const pick = (which: 'from' | 'to') => {
        const input = h('input', { type: 'radio', name: `diff-${which}`, class: `pick-${which}`, value: String(v.version), title: `Compare ${which} v${v.version}` });
        input.checked = (which === 'from' ? this.from : this.to) === v.version;
        return on(input, 'change', () => this.choose(which, v.version));
      };
      const confirming = this.confirming === v.version;
      const action = v.current
        ? muted('current')
        : on(
            h(
              'button',
              {
                type: 'button',
                class: confirming ? 'rollback danger' : 'rollback',
                'data-version': v.version,
                disabled: this.busy || !this.mayRollBack(),
                title: this.mayRollBack() ? `Apply version ${v.version} again, as a new version` : 'Rolling back needs the admin role',
              },
              confirming ? `Confirm: roll back to v${v.version}` : `Roll back to v${v.version}`,
            ),
            'click',
            () => void this.rollback(v.version),
          );
      body.append(
        h(
          'tr',
          { 'data-version': v.version, class: v.current ? 'current' : '' },
          h('td', { class: 'num' }, `v${v.version}`),
          h('td', { class: 'nowrap', title: v.applied_at }, ago(v.applied_at)),
          h('td', { class: 'principal' }, v.principal ?? muted('unknown')),
          h('td', { class: 'source' }, v.source),
          h('td', { class: 'pick' }, pick('from')),
          h('td', { class: 'pick' }, pick('to')),
          h('td', {}, action),
        ),
      );
    }
    const more = page.next_before ? muted(`Older versions: GET /api/v1/stack/versions?before=${page.next_before}`) : '';
    fill(this.list, h('div', { class: 'table-wrap' }, table('grid versions-table', ['Version', 'Applied', 'By', 'Source', 'From', 'To', ''], body)), more);
  }

  private choose(which: 'from' | 'to', version: number): void {
    this.picked = true;
    if (which === 'from') this.from = version;
    else this.to = version;
    void this.loadDiff();
  }

  private async loadDiff(): Promise<void> {
    const { from, to } = this;
    if (from === null || to === null) return;
    try {
      const { body } = await getJson<ManifestDiff>(`/stack/diff?from=${from}&to=${to}`);
      if (this.from === from && this.to === to) this.renderDiff(body);
    } catch (e) {
      fill(this.diffEl, h('p', { class: 'problem', role: 'alert' }, message(e)));
    }
  }

  private renderDiff(d: ManifestDiff): void {
    const title = h('h3', {}, `Changes from v${d.from} to v${d.to}`);
    if (!d.stack.length && !d.services.length) {
      fill(this.diffEl, title, muted('The two versions declare the same stack.'));
      return;
    }
    const rows: HTMLTableRowElement[] = [];
    for (const f of d.stack) {
      rows.push(h('tr', { class: 'changed', 'data-service': '' }, h('td', {}, muted('stack')), h('td', {}, 'changed'), h('td', { class: 'mono' }, f.field), h('td', {}, value(f.from)), h('td', {}, value(f.to))));
    }
    for (const s of d.services) {
      if (s.change !== 'changed' || !s.fields?.length) {
        rows.push(h('tr', { class: s.change, 'data-service': s.service }, h('td', {}, h('strong', {}, s.service)), h('td', {}, s.change), h('td', { colspan: 3 }, '')));
        continue;
      }
      s.fields.forEach((f, i) =>
        rows.push(
          h(
            'tr',
            { class: 'changed', 'data-service': s.service, 'data-field': f.field },
            h('td', {}, i === 0 ? h('strong', {}, s.service) : ''),
            h('td', {}, i === 0 ? 'changed' : ''),
            h('td', { class: 'mono' }, f.field),
            h('td', { class: 'old' }, value(f.from)),
            h('td', { class: 'new' }, value(f.to)),
          ),
        ),
      );
    }
    fill(this.diffEl, title, h('div', { class: 'table-wrap' }, table('grid diff-table', ['Service', 'Change', 'Field', `v${d.from}`, `v${d.to}`], h('tbody', {}, ...rows))));
  }

  private say(text: string, problem: boolean): void {
    this.notice.hidden = false;
    this.notice.className = problem ? 'notice problem' : 'notice';
    fill(this.notice, text);
  }

  private async rollback(version: number): Promise<void> {
    if (this.confirming !== version) {
      this.confirming = version;
      this.render();
      return;
    }
    this.confirming = null;
    this.busy = true;
    this.render();
    try {
      const { body } = await postJson<StackApplied>(`/stack/versions/${version}/rollback`);
      const replaced = body.replaced.length ? `; replacing ${body.replaced.join(', ')}` : '';
      this.say(`Rolled back to v${version}: applied as v${body.version}${replaced}.`, false);
    } catch (e) {
      const field = e instanceof ApiError && e.field ? ` [${e.field}]` : '';
      this.say(`Roll back to v${version}: ${message(e)}${field}`, true);
    }
    this.busy = false;
    this.host.reload('versions', 'graph', 'stack');
  }

  /** Loads the newest page of versions (the loader of the same name in main.ts). */
  static async read(): Promise<ManifestVersions> {
    return (await getJson<ManifestVersions>('/stack/versions?limit=20')).body;
  }
}
