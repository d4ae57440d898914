// A managed service's output (protocol.md §12.7): the last lines, merged across its replicas and
// nodes in time order, then every new line live (GET …/logs/follow, NDJSON), with a filter the
// server applies (text or stream). Lines are shown as text only; at most MAX_LINES are kept.

import { ApiError, followNdjson, getJson } from '../api';
import { h, fill, on } from '../dom';
import type { ServiceLogLine, ServiceLogs } from '../types';
import { muted } from './common';

const MAX_LINES = 2000;
const FIRST_LINES = 200;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class LogsView {
  readonly root: HTMLElement;
  private readonly service = h('select', { id: 'logs-service', 'aria-label': 'Service' }) as HTMLSelectElement;
  private readonly filter = h('input', { type: 'search', id: 'logs-filter', placeholder: 'only lines containing…', 'aria-label': 'Filter' }) as HTMLInputElement;
  private readonly stream = h('select', { id: 'logs-stream', 'aria-label': 'Stream' }, h('option', { value: '' }, 'stdout and stderr'), h('option', { value: 'stdout' }, 'stdout'), h('option', { value: 'stderr' }, 'stderr')) as HTMLSelectElement;
  private readonly status = h('span', { class: 'muted', id: 'logs-status', role: 'status' });
  private readonly lines = h('ol', { class: 'log-lines mono', id: 'log-lines' });
  private services: string[] = [];
  private following: AbortController | null = null;
  private filterTimer: number | undefined;

  constructor() {
    on(this.service, 'change', () => this.open());
    on(this.stream, 'change', () => this.open());
    on(this.filter, 'input', () => {
      window.clearTimeout(this.filterTimer);
      this.filterTimer = window.setTimeout(() => this.open(), 300);
    });
    this.root = h(
      'section',
      { class: 'card', id: 'logs-card' },
      h('h2', {}, 'Logs'),
      h('div', { class: 'toolbar' }, this.service, this.stream, this.filter, this.status),
      this.lines,
    );
    fill(this.lines, muted('Choose a service.'));
  }

  /** The managed services (replicated ones by their service's name), from the stack. */
  setServices(names: string[]): void {
    const sorted = [...new Set(names)].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    if (sorted.join('\n') === this.services.join('\n')) return;
    this.services = sorted;
    const chosen = this.service.value;
    fill(this.service, h('option', { value: '' }, 'choose a service'), ...sorted.map((n) => h('option', { value: n }, n)));
    this.service.value = sorted.includes(chosen) ? chosen : '';
  }

  private query(): string {
    const q = new URLSearchParams();
    if (this.filter.value.trim()) q.set('q', this.filter.value.trim());
    if (this.stream.value) q.set('stream', this.stream.value);
    return q.toString();
  }

  private append(line: ServiceLogLine): void {
    if (this.lines.querySelector('.muted')) fill(this.lines);
    this.lines.append(
      h(
        'li',
        { class: `log-line ${line.stream}`, 'data-unit': line.unit, 'data-stream': line.stream },
        h('span', { class: 'log-time', title: line.time }, line.time.slice(11, 23)),
        ' ',
        h('span', { class: 'log-unit' }, `${line.unit}@${line.node}`),
        ' ',
        h('span', { class: 'log-text' }, line.text),
      ),
    );
    while (this.lines.childElementCount > MAX_LINES) this.lines.firstElementChild?.remove();
    this.lines.lastElementChild?.scrollIntoView?.({ block: 'nearest' });
  }

  /** Shows the chosen service's last lines, then follows it. */
  private async open(): Promise<void> {
    this.following?.abort();
    this.following = null;
    const name = this.service.value;
    if (!name) {
      fill(this.lines, muted('Choose a service.'));
      this.status.textContent = '';
      return;
    }
    const follow = new AbortController();
    this.following = follow;
    fill(this.lines, muted('Reading…'));
    const base = `/stack/services/${encodeURIComponent(name)}/logs`;
    const q = this.query();
    try {
      // Follow first, then read the last lines: a line written in between is in one or the
      // other (or both: the time and text tell them apart).
      const seen = new Set<string>();
      const key = (l: ServiceLogLine) => `${l.time} ${l.unit} ${l.stream} ${l.text}`;
      const buffered: ServiceLogLine[] = [];
      let reading = true;
      const live = followNdjson(`${base}/follow${q ? `?${q}` : ''}`, follow.signal, (item) => {
        const line = item as ServiceLogLine;
        if (reading) buffered.push(line);
        else if (!seen.has(key(line))) this.append(line);
      });
      const { body } = await getJson<ServiceLogs>(`${base}?limit=${FIRST_LINES}${q ? `&${q}` : ''}`);
      if (follow.signal.aborted) return;
      fill(this.lines);
      for (const line of body.lines) {
        seen.add(key(line));
        this.append(line);
      }
      reading = false;
      for (const line of buffered) if (!seen.has(key(line))) this.append(line);
      if (!this.lines.childElementCount) fill(this.lines, muted('No output yet.'));
      this.status.textContent = body.truncated ? 'following · older lines may exist beyond the scan' : 'following';
      this.status.dataset.state = 'following';
      await live;
      if (!follow.signal.aborted) this.status.textContent = 'the stream ended; choose the service again to follow it';
    } catch (e) {
      if (e instanceof DOMException && e.name === 'AbortError') return;
      this.status.dataset.state = 'error';
      const field = e instanceof ApiError && e.field ? ` [${e.field}]` : '';
      this.status.textContent = `${message(e)}${field}`;
    }
  }
}
