// The start-up timeline (GET /api/v1/stack/profile) as a Gantt chart: per service the wait for a
// free slot (dependencies met → launch) and the start (launch → ready or completed); the critical
// chain's bars in their own colour, labelled.

import { h, s, fill } from '../dom';
import { cut, ms } from '../format';
import type { StackProfile } from '../types';
import { empty } from './common';

const LABEL_W = 150;
const CHART_W = 720;
const RIGHT_W = 150;
const ROW_H = 24;
const AXIS_H = 24;

function niceStep(span: number): number {
  const raw = span / 6;
  if (raw <= 0) return 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

export function renderProfile(el: HTMLElement, p: StackProfile | null): void {
  if (!p) {
    fill(el, empty('No start-up run since the orchestrator started: the timeline appears with the next run (an apply, or a start with a stack wanted up).'));
    return;
  }
  const names = Object.keys(p.services ?? {});
  const chain = new Set((p.chain ?? []).map((c) => c.service));
  const summary = h(
    'div',
    { class: 'profile-summary', id: 'profile-summary' },
    h('span', {}, `Run of manifest version ${p.manifest_version}`),
    h('span', { class: `badge outcome-${p.finished ? (p.outcome ?? 'unknown').replace(/[^a-z]/g, '') : 'running'}` }, p.finished ? (p.outcome ?? 'finished') : 'in progress'),
    h('span', {}, `wall ${ms(p.wall_ms)}`),
    h('span', {}, `critical path ${ms(p.critical_path_ms)}`),
    h('span', {}, `efficiency ${Math.round((p.efficiency ?? 0) * 100)}%`),
  );
  if (!names.length) {
    fill(el, summary, empty('The run has no services.'));
    return;
  }
  const rows = names
    .map((name) => ({ name, ...p.services[name]! }))
    .sort((a, b) => (a.started_ms ?? a.queued_ms ?? Infinity) - (b.started_ms ?? b.queued_ms ?? Infinity) || a.name.localeCompare(b.name));
  let end = p.wall_ms || 0;
  for (const r of rows) end = Math.max(end, r.ready_ms ?? 0, r.started_ms ?? 0, r.queued_ms ?? 0);
  end = end > 0 ? end : 1;
  const x = (t: number) => LABEL_W + (Math.max(0, t) / end) * CHART_W;
  const width = LABEL_W + CHART_W + RIGHT_W;
  const height = AXIS_H + rows.length * ROW_H + 8;

  const svg = s('svg', { class: 'gantt', id: 'stack-gantt', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': 'Start-up timeline' });
  const axis = s('g', { class: 'axis' });
  const step = niceStep(end);
  for (let t = 0; t <= end + 1e-9; t += step) {
    axis.append(
      s('line', { class: 'tick', x1: x(t), x2: x(t), y1: AXIS_H - 4, y2: height }),
      s('text', { class: 'tick-label', x: x(t), y: AXIS_H - 8, 'text-anchor': 'middle' }, ms(t)),
    );
  }
  svg.append(axis);
  rows.forEach((r, i) => {
    const y = AXIS_H + i * ROW_H;
    const critical = chain.has(r.name);
    const g = s('g', { class: `gantt-row${critical ? ' critical' : ''}`, 'data-service': r.name });
    g.append(s('text', { class: 'row-label', x: LABEL_W - 8, y: y + ROW_H / 2 + 4, 'text-anchor': 'end' }, cut(r.name, 20)));
    if (r.queued_ms !== undefined && r.started_ms !== undefined && r.started_ms > r.queued_ms) {
      g.append(s('rect', { class: 'bar wait', x: x(r.queued_ms), y: y + 8, width: Math.max(1, x(r.started_ms) - x(r.queued_ms)), height: ROW_H - 16 }));
    }
    if (r.started_ms !== undefined) {
      const stop = r.ready_ms ?? end;
      const bar = s('rect', {
        class: `bar run${critical ? ' critical' : ''}${r.ready_ms === undefined ? ' open' : ''}`,
        'data-service': r.name,
        x: x(r.started_ms),
        y: y + 4,
        width: Math.max(2, x(stop) - x(r.started_ms)),
        height: ROW_H - 8,
        rx: 2,
      });
      const took = r.ready_ms !== undefined ? r.ready_ms - r.started_ms : undefined;
      bar.append(
        s('title', {}, `${r.name}: launched at ${ms(r.started_ms)}, ${r.ready_ms !== undefined ? `ready at ${ms(r.ready_ms)} (took ${ms(took)})` : 'not ready yet'}${critical ? ' — on the critical chain' : ''}`),
      );
      g.append(bar);
      g.append(
        s('text', { class: `bar-label${critical ? ' critical' : ''}`, x: x(stop) + 6, y: y + ROW_H / 2 + 4 }, took !== undefined ? ms(took) : 'starting…', critical ? ' · critical chain' : ''),
      );
    } else if (r.queued_ms !== undefined) {
      g.append(s('circle', { class: 'queued', cx: x(r.queued_ms), cy: y + ROW_H / 2, r: 3 }));
      g.append(s('text', { class: 'bar-label', x: x(r.queued_ms) + 8, y: y + ROW_H / 2 + 4 }, 'waiting'));
    }
    svg.append(g);
  });

  const legend = h(
    'div',
    { class: 'legend' },
    h('span', { class: 'legend-item' }, h('span', { class: 'swatch gantt-wait' }), 'waiting for a slot'),
    h('span', { class: 'legend-item' }, h('span', { class: 'swatch gantt-run' }), 'launch → ready'),
    h('span', { class: 'legend-item' }, h('span', { class: 'swatch gantt-critical' }), 'critical chain'),
  );
  const chainText = (p.chain ?? []).map((c) => `${c.service} (${ms(c.took_ms)})`).join(' → ');
  const bottlenecks = (p.bottlenecks ?? []).slice(0, 8);
  fill(
    el,
    summary,
    legend,
    h('div', { class: 'svg-scroll' }, svg),
    chainText ? h('p', { class: 'chain', id: 'critical-chain' }, h('strong', {}, 'Critical chain: '), chainText) : null,
    bottlenecks.length
      ? h('details', { class: 'bottlenecks' }, h('summary', {}, `Bottlenecks (${bottlenecks.length})`), h('ul', {}, ...bottlenecks.map((b) => h('li', {}, `${b.service}: ${ms(b.took_ms)} — ${b.why}`))))
      : null,
  );
}
