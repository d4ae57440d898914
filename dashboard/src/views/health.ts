// The system health banner (GET /api/v1/health, §5.9).

import { h, fill, on } from '../dom';
import type { SystemHealth } from '../types';

/** `endSelfPreservation`, when given, is offered while self-preservation holds (an operator ends
 * it after a deliberate scale-down, §5.9). */
export function renderBanner(el: HTMLElement, health: SystemHealth | null, error: string | null, endSelfPreservation?: () => void): void {
  if (!health) {
    el.className = 'banner banner-unknown';
    el.dataset.state = 'unknown';
    fill(el, h('strong', {}, 'System health unknown'), error ? ` — ${error}` : '');
    return;
  }
  const state = ['healthy', 'degraded', 'critical'].includes(health.state) ? health.state : 'unknown';
  el.className = `banner banner-${state}`;
  el.dataset.state = state;
  const parts: (string | HTMLElement)[] = [
    h('strong', { id: 'system-state' }, `System ${state}`),
    h('span', {}, `${health.healthy} healthy · ${health.degraded} degraded · ${health.critical} critical services`),
  ];
  if (health.critical_services_down?.length) {
    parts.push(h('span', { class: 'alert' }, `critical services down: ${health.critical_services_down.join(', ')}`));
  }
  if (health.self_preservation) {
    parts.push(h('span', { class: 'alert', id: 'self-preservation' }, 'self-preservation: expiry suspended'));
    if (endSelfPreservation) {
      const button = h('button', { type: 'button', class: 'link', id: 'end-self-preservation', title: 'After a deliberate scale-down: expire the overdue instances now' }, 'End it…');
      parts.push(on(button, 'click', endSelfPreservation));
    }
  }
  if (health.checker?.lagging) parts.push(h('span', { class: 'alert' }, 'health checker lagging'));
  if (health.services_in_maintenance?.length) {
    parts.push(h('span', {}, `in maintenance: ${health.services_in_maintenance.join(', ')}`));
  }
  fill(el, ...parts);
}
