// The dependency graph of the managed services (GET /api/v1/stack/graph?format=json) as SVG: one
// column per start-up level, left to right, an arrow from each service to each dependency
// (dashed when optional, labelled with its condition), nodes filled by state. The layout (columns,
// links, arcs over the graph) is shared with the workflows' DAGs (views/workflows.ts).

import { h, s, fill } from '../dom';
import { cut } from '../format';
import type { StackGraph, StackService } from '../types';
import { empty } from './common';

export const NODE_W = 168;
export const NODE_H = 46;
const GAP_X = 96;
const GAP_Y = 18;
const PAD = 16;

/** The colour groups of the states, as the DOT graph of §12.7 fills them. */
export const STATE_GROUPS: { label: string; states: string[] }[] = [
  { label: 'ready', states: ['ready'] },
  { label: 'starting · started · restarting', states: ['starting', 'started', 'restarting'] },
  { label: 'pending · blocked', states: ['pending', 'blocked'] },
  { label: 'crashed · failed', states: ['crashed', 'failed'] },
  { label: 'stopping · stopped', states: ['stopping', 'stopped'] },
  { label: 'completed', states: ['completed'] },
];

export function stateClass(state: string): string {
  return /^[a-z]+$/.test(state) ? `state-${state}` : 'state-unknown';
}

export function legend(): HTMLElement {
  return h(
    'div',
    { class: 'legend', id: 'graph-legend' },
    ...STATE_GROUPS.map((g) => h('span', { class: 'legend-item' }, h('span', { class: `swatch ${stateClass(g.states[0]!)}` }), g.label)),
    h('span', { class: 'legend-item' }, h('span', { class: 'line-solid' }), 'required dependency'),
    h('span', { class: 'legend-item' }, h('span', { class: 'line-dashed' }), 'optional'),
  );
}

/** A link between two nodes of a layered graph: `from` is in a later column than `to`. */
export interface Link {
  from: string;
  to: string;
}

/** Where each node of a layered graph goes, and the size of the drawing. */
export interface Layered {
  pos: Map<string, { x: number; y: number }>;
  width: number;
  height: number;
  /** Links that skip a column: they arc over the graph instead of crossing the nodes between. */
  long: Set<Link>;
}

/**
 * Lays out columns of nodes left to right (`levels[0]` first): each node goes next to the nodes
 * it links to in earlier columns (their mean height), so that links cross less; room is left
 * above the nodes for the arcs of the links that skip a column.
 */
export function layoutLevels(levels: string[][], links: Link[]): Layered {
  const levelOf = new Map<string, number>();
  levels.forEach((level, li) => level.forEach((name) => levelOf.set(name, li)));
  const long = new Set(links.filter((e) => (levelOf.get(e.from) ?? 0) - (levelOf.get(e.to) ?? 0) > 1));
  const top = PAD + (long.size ? 18 + 10 * Math.min(long.size, 8) : 0);
  const rows = Math.max(...levels.map((l) => l.length));
  const width = PAD * 2 + levels.length * NODE_W + (levels.length - 1) * GAP_X;
  const height = top + PAD + rows * NODE_H + (rows - 1) * GAP_Y;
  const deps = new Map<string, string[]>();
  for (const e of links) deps.set(e.from, [...(deps.get(e.from) ?? []), e.to]);
  const pos = new Map<string, { x: number; y: number }>();
  levels.forEach((level, li) => {
    const bary = (name: string) => {
      const ys = (deps.get(name) ?? []).map((d) => pos.get(d)?.y).filter((y): y is number => y !== undefined);
      return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : Number.POSITIVE_INFINITY;
    };
    const ordered = li === 0 ? [...level] : [...level].sort((a, b) => bary(a) - bary(b) || a.localeCompare(b));
    const offset = ((rows - ordered.length) * (NODE_H + GAP_Y)) / 2;
    ordered.forEach((name, i) => pos.set(name, { x: PAD + li * (NODE_W + GAP_X), y: top + offset + i * (NODE_H + GAP_Y) }));
  });
  return { pos, width, height, long };
}

/**
 * The path of a link, from the left side of `a` (the later node) to the right side of `b`, or
 * an arc over the graph for a link that skips a column (`arc` numbers the arcs, so that they do
 * not overlap); and where its label goes.
 */
export function linkPath(a: { x: number; y: number }, b: { x: number; y: number }, arc: number | null): { d: string; lx: number; ly: number } {
  if (arc !== null) {
    const peak = PAD + 4 + 10 * (arc % 8);
    const x1 = a.x + 16;
    const x2 = b.x + NODE_W - 16;
    // The label at the curve's height half-way: a cubic Bézier's point at t = 0.5.
    return { d: `M${x1},${a.y} C${x1},${peak - 10} ${x2},${peak - 10} ${x2},${b.y}`, lx: (x1 + x2) / 2, ly: 0.125 * (a.y + b.y) + 0.75 * (peak - 10) - 3 };
  }
  const x1 = a.x;
  const y1 = a.y + NODE_H / 2;
  const x2 = b.x + NODE_W;
  const y2 = b.y + NODE_H / 2;
  const mx = (x1 + x2) / 2;
  return { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, lx: mx, ly: (y1 + y2) / 2 - 4 };
}

/** The arrow head of the links, as a marker of id `id` (unique in the page). */
export function arrowMarker(id: string): SVGDefsElement {
  return s(
    'defs',
    {},
    s('marker', { id, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow-head' })),
  );
}

export function renderGraph(el: HTMLElement, graph: StackGraph | null): void {
  if (!graph || !graph.levels.length) {
    fill(el, empty('No stack is applied. Apply a manifest (orchestrator up -f FILE, or PUT /api/v1/stack) to see its services here.'));
    return;
  }
  const byName = new Map<string, StackService>(graph.services.map((sv) => [sv.name, sv]));
  const { pos, width, height, long } = layoutLevels(graph.levels, graph.edges);

  const svg = s('svg', {
    class: 'graph',
    id: 'stack-graph',
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-label': 'Dependency graph of the managed services',
  });
  svg.append(arrowMarker('arrow'));
  const edges = s('g', { class: 'edges' });
  let arc = 0;
  for (const e of graph.edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const { d, lx, ly } = linkPath(a, b, long.has(e) ? arc++ : null);
    const path = s('path', { class: `edge${e.required ? '' : ' optional'}`, d, 'marker-end': 'url(#arrow)', 'data-from': e.from, 'data-to': e.to });
    path.append(s('title', {}, `${e.from} needs ${e.to} ${e.condition}${e.required ? '' : ' (optional)'}`));
    edges.append(path, s('text', { class: 'edge-label', x: lx, y: ly, 'text-anchor': 'middle' }, e.condition));
  }
  const nodes = s('g', { class: 'nodes' });
  for (const [name, p] of pos) {
    const sv = byName.get(name);
    const state = sv?.state ?? 'unknown';
    const g = s('g', { class: 'node', 'data-service': name, 'data-state': state, transform: `translate(${p.x},${p.y})` });
    g.append(
      s('rect', { class: `node-rect ${stateClass(state)}${sv?.critical ? ' critical' : ''}`, width: NODE_W, height: NODE_H, rx: 6 }),
      s('text', { class: 'node-name', x: 10, y: 19 }, cut(name, 22)),
      s('text', { class: 'node-state', x: 10, y: 36 }, [state, sv?.pid ? `pid ${sv.pid}` : '', sv ? `p${sv.priority}` : '', sv?.critical ? 'critical' : ''].filter(Boolean).join(' · ')),
      s(
        'title',
        {},
        [
          `${name}: ${state}`,
          sv?.reason ?? '',
          sv ? `${sv.node ? `node ${sv.node}` : 'no node yet'}, restarts ${sv.restarts}` : '',
          sv?.replica_of ? `replica of ${sv.replica_of}` : '',
          sv?.placement ?? '',
        ]
          .filter(Boolean)
          .join('\n'),
      ),
    );
    nodes.append(g);
  }
  svg.append(edges, nodes);
  fill(el, h('div', { class: 'svg-scroll' }, svg));
}
