// Small pieces shared by the views.

import { h, type Child } from '../dom';

/** A coloured badge for a health or aggregate state; data-state carries the raw value for tests and CSS. */
export function badge(kind: string, value: string, extra?: string): HTMLElement {
  const safe = /^[a-z_]+$/.test(value) ? value : 'unknown';
  return h('span', { class: `badge ${kind}-${safe}`, 'data-state': value }, extra ?? value);
}

/** A placeholder row or paragraph for an empty list. */
export function empty(text: string): HTMLElement {
  return h('p', { class: 'empty' }, text);
}

export function emptyRow(cols: number, text: string): HTMLTableRowElement {
  return h('tr', { class: 'empty-row' }, h('td', { colspan: cols }, text));
}

export function muted(...children: Child[]): HTMLElement {
  return h('span', { class: 'muted' }, ...children);
}

/** A table with a header row and the given body. */
export function table(cls: string, headers: string[], body: HTMLTableSectionElement | HTMLTableSectionElement[]): HTMLTableElement {
  const bodies = Array.isArray(body) ? body : [body];
  return h('table', { class: cls }, h('thead', {}, h('tr', {}, ...headers.map((t) => h('th', { scope: 'col' }, t)))), ...bodies);
}
