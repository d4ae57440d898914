// The live event feed: newest first, capped, each event expandable to its full JSON.

import { h, on, fill } from '../dom';
import { cpu, cut, mib, time } from '../format';
import { subjectFilterProblem } from '../stream';
import type { CloudEvent } from '../types';

const CAP = 500;

/** Why a term ended and the next began (the `reason` of the leadership events). */
const SUCCESSION = new Map<string, string>([
  ['first', "the group's first term"],
  ['lease_ended', 'the lease ran out'],
  ['holder_gone', "the leader's process was gone"],
]);

type Data = Record<string, unknown>;

function str(v: unknown): string {
  return typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : '';
}

function succession(v: unknown): string {
  const reason = str(v);
  return SUCCESSION.get(reason) ?? reason;
}

/** "2 CPU, 7.75 GiB" from a `{cpu, memory}` object; "" when it is none. */
function amount(v: unknown): string {
  const r = (v && typeof v === 'object' ? v : {}) as Data;
  return typeof r.cpu === 'number' && typeof r.memory === 'number' ? `${cpu(r.cpu)}, ${mib(r.memory)}` : '';
}

/** Names from a list of the event's data; none when it is no list. */
function names(v: unknown): string[] {
  return Array.isArray(v) ? v.map(str).filter(Boolean) : [];
}

/** One line for an event of a rolling update (`lifecycle.rollout_<phase>`, data RolloutData):
 * the replica lists it carries say how far it got, and `revert_to` what a failure leads to. */
function rollout(phase: string, d: Data): string {
  const replaced = names(d.replaced);
  const batch = names(d.batch);
  const total = replaced.length + batch.length + names(d.remaining).length;
  const to = `v${str(d.version)}`;
  // Absent (or null) when it does not revert: turned off, or this update is itself a revert.
  const revert = typeof d.revert_to === 'number' ? `v${d.revert_to}` : '';
  switch (phase) {
    case 'started':
      // "api: rolling update v2 → v3 started: 3 replicas, 1 at a time; reverts to v2 if it fails"
      return `${str(d.service)}: rolling update v${str(d.from_version)} → ${to} started: ${total} replica${total === 1 ? '' : 's'}, ${str(d.max_parallel)} at a time; ${revert ? `reverts to ${revert} if it fails` : 'no revert'}`;
    case 'progressed':
      // "api: rolling to v3 (1 of 3 replaced, batch api-1)"
      return `${str(d.service)}: rolling to ${to} (${replaced.length} of ${total} replaced${batch.length ? `, batch ${batch.join(', ')}` : ''})`;
    case 'completed':
      // "api: rolled out v3 (3 of 3 replaced)"
      return `${str(d.service)}: rolled out ${to} (${replaced.length} of ${total} replaced)`;
    default:
      // "api: rollout to v3 failed: api-0 crashed on version 3: …; reverting to v2"
      return `${str(d.service)}: rollout to ${to} failed: ${str(d.reason) || 'no reason given'}; ${revert ? `reverting to ${revert}` : 'not reverted'}`;
  }
}

/** One line saying what the event is about, from the fields of §6, §12.6, §13.5, §16.3 and §17.2,
 * of the replicas' leadership events, of a service lost with its node or preempted, and of a
 * rolling update. */
export function summarize(ev: CloudEvent): string {
  const d = (ev.data && typeof ev.data === 'object' ? ev.data : {}) as Data;
  const kind = String(ev.type ?? '').replace(/^io\.orch\./, '').replace(/\.v\d+$/, '');
  const inst = (d.instance && typeof d.instance === 'object' ? d.instance : {}) as Data;
  const arrow = (a: unknown, b: unknown) => (str(a) ? `${str(a)} → ${str(b)}` : str(b));
  switch (kind) {
    case 'registry.registered':
    case 'registry.updated':
    case 'registry.expired':
    case 'registry.recovered':
      return `${str(inst.name)} ${str(inst.id)}: ${str(inst.health)}${Array.isArray(d.changed) ? ` (changed ${d.changed.map(str).join(', ')})` : ''}`;
    case 'registry.deregistered':
      return `${str(inst.name)} ${str(inst.id)} (${str(d.reason)})`;
    case 'health.check_changed':
      return `${str(d.service)} ${str(d.instance_id)} check ${str(d.check)}: ${arrow(d.previous, d.status)}${str(d.output) ? ` — ${str(d.output)}` : ''}`;
    case 'health.instance_changed':
      return `${str(inst.name)} ${str(inst.id)}: ${arrow(d.previous, d.health)} (${str(d.cause)})`;
    case 'health.service_changed':
      return `service ${str(d.service)}: ${arrow(d.previous, d.state)}`;
    case 'health.system_changed':
      return `system: ${arrow(d.previous, d.state)}`;
    case 'health.maintenance_entered':
    case 'health.maintenance_exited':
      return `${str(d.service)} ${str(d.instance_id)} ${str(d.reason)}`;
    case 'lifecycle.manifest_applied':
      return `manifest version ${str(d.version)} from ${str(d.source)}: ${str(d.services)} services`;
    case 'config.changed':
    case 'config.deleted':
      // "web.db.url put, revision 7 (was revision 4)"
      return `${str(d.key)} ${str(d.op)}, revision ${str(d.revision)}${typeof d.previous_revision === 'number' ? ` (was revision ${d.previous_revision})` : ''}`;
    case 'system.self_preservation_entered':
    case 'system.self_preservation_exited':
      // The message says why, and who ended it when an operator did (§5.9).
      return str(d.message);
    case 'lifecycle.run_finished':
      return `start-up run ${str(d.outcome)} in ${str(d.wall_ms)} ms`;
    case 'lifecycle.rollout_started':
    case 'lifecycle.rollout_progressed':
    case 'lifecycle.rollout_completed':
    case 'lifecycle.rollout_failed':
      return rollout(kind.slice('lifecycle.rollout_'.length), d);
    case 'resource.node_joined':
    case 'resource.node_down':
    case 'resource.node_up': {
      // "node n2 down: silent for 10.4s (node-down time 10s) · ran api-1, batch"
      const verb = kind === 'resource.node_joined' ? 'joined' : kind === 'resource.node_down' ? 'down' : 'up';
      const services = Array.isArray(d.services) ? d.services.map(str).filter(Boolean) : [];
      const size = kind === 'resource.node_joined' ? amount(d.capacity) : '';
      return `node ${str(d.node)} ${verb}: ${str(d.reason)}${size ? ` · ${size}` : ''}${services.length ? ` · ran ${services.join(', ')}` : ''}`;
    }
    case 'resource.lost':
      // "api-1 (replica of api) lost with node n3 (pid 4242): n3 went down"
      return `${str(d.service)}${str(d.replica_of) ? ` (replica of ${str(d.replica_of)})` : ''} lost with node ${str(d.node)}${typeof d.pid === 'number' ? ` (pid ${d.pid})` : ''}${str(d.reason) ? `: ${str(d.reason)}` : ''}`;
    case 'resource.preempted':
      // "batch (priority 10) preempted on n2 for api (priority 90) · 4 left in the budget"
      return `${str(d.service)} (priority ${str(d.priority)}) preempted on ${str(d.node)} for ${str(d.by)} (priority ${str(d.by_priority)})${typeof d.budget_left === 'number' ? ` · ${d.budget_left} left in the budget` : ''}`;
    case 'cluster.leader_elected':
      return `${str(d.replica)} leads, term ${str(d.term)}${str(d.previous) ? ` (after ${str(d.previous)})` : ''}: ${succession(d.reason)}`;
    case 'cluster.leader_lost':
      return `${str(d.replica)} lost the lead (term ${str(d.term)}) to ${str(d.successor)}, term ${str(d.successor_term)}: ${succession(d.reason)}`;
    default:
      break;
  }
  if (kind.startsWith('lifecycle.') && d.state !== undefined) {
    return `${str(d.service)}: ${arrow(d.previous, d.state)}${str(d.reason) ? ` — ${str(d.reason)}` : ''}`;
  }
  if (kind.startsWith('workflow.')) {
    // §16.3: "deploy 01a23f95 step ask started (attempt 1) · running", "deploy 01a23f95 succeeded".
    const what = kind.slice('workflow.'.length).replace(/^step_/, '').replace(/_/g, ' ');
    const step = str(d.step);
    const err = d.error && typeof d.error === 'object' ? str((d.error as Data).message) : str(d.error);
    const why = err || str(d.reason);
    const head = `${str(d.workflow)} ${str(d.execution_id).slice(0, 8)}`;
    if (!step) return `${head} ${what}${why ? `: ${why}` : ''}`;
    const attempt = typeof d.attempt === 'number' ? ` (attempt ${d.attempt})` : '';
    const compensation = str(d.compensation) ? `, compensated by ${str(d.compensation)}` : '';
    return `${head} step ${step} ${what}${attempt}${compensation}${why ? `: ${why}` : ''} · ${str(d.status)}`;
  }
  if (kind.startsWith('priority.')) {
    const count = typeof d.count === 'number' ? ` (×${d.count})` : '';
    return `${str(d.service)}: ${str(d.previous)} → ${str(d.effective)} by ${str(d.source)}${count}${str(d.reason) ? `: ${str(d.reason)}` : ''}`;
  }
  if (str(d.message)) return str(d.message);
  return str(ev.subject);
}

export class FeedView {
  readonly root: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly input: HTMLInputElement;
  private readonly problem: HTMLElement;
  private readonly active: HTMLElement;
  private readonly count: HTMLElement;
  private n = 0;
  /** "<prefix>.evt.", learnt from the server; filters must lie under it. */
  private eventsRoot: string | undefined;
  /** Ids of the events shown, so that a resumed stream's repeats are not shown twice. */
  private readonly seen = new Set<string>();

  constructor(private readonly onFilter: (subjects: string) => void, private readonly onCount: (n: number) => void) {
    this.input = h('input', {
      type: 'text',
      id: 'subject-filter',
      placeholder: 'Subject filter, e.g. orch.evt.health.> (comma-separated; empty: every event)',
      'aria-label': 'Subject filter',
      autocomplete: 'off',
      spellcheck: 'false',
    });
    this.problem = h('span', { class: 'problem', role: 'status' });
    const form = h('form', { class: 'toolbar', id: 'feed-form' }, this.input, h('button', { type: 'submit' }, 'Apply'));
    const clear = on(h('button', { type: 'button', id: 'feed-clear' }, 'Clear'), 'click', () => this.clear());
    form.append(clear, this.problem);
    on(form, 'submit', (ev) => {
      ev.preventDefault();
      const value = this.input.value.trim();
      const problem = subjectFilterProblem(value, this.eventsRoot);
      this.problem.textContent = problem ? `Not a subject filter: ${problem}` : '';
      if (problem) return;
      this.clear();
      this.onFilter(value);
    });
    this.active = h('span', { id: 'feed-subjects', class: 'muted' });
    this.count = h('span', { class: 'muted' });
    this.list = h('ol', { class: 'feed', id: 'feed' });
    this.root = h(
      'div',
      { class: 'events' },
      form,
      h('div', { class: 'feed-meta' }, 'Listening to ', this.active, ' · ', this.count, ` · newest first, at most ${CAP}`),
      this.list,
    );
    this.renderCount();
  }

  /** The filters the server confirmed in its ready frame. */
  setSubjects(subjects: string[]): void {
    this.active.textContent = subjects.join(', ') || '—';
    const tokens = (subjects[0] ?? '').split('.');
    if (tokens.length >= 3 && tokens[1] === 'evt') this.eventsRoot = `${tokens[0]}.evt.`;
    if (!this.input.value) this.input.placeholder = `Subject filter, e.g. ${subjects[0] ?? 'orch.evt.>'} (comma-separated; empty: every event)`;
  }

  clear(): void {
    this.list.replaceChildren();
    this.seen.clear();
    this.n = 0;
    this.renderCount();
  }

  add(subject: string, ev: CloudEvent): void {
    const id = String(ev.id ?? '');
    if (id) {
      if (this.seen.has(id)) return;
      this.seen.add(id);
      if (this.seen.size > CAP * 4) this.seen.delete(this.seen.values().next().value!);
    }
    if (!this.eventsRoot) {
      const tokens = subject.split('.');
      if (tokens.length >= 3 && tokens[1] === 'evt') this.eventsRoot = `${tokens[0]}.evt.`;
    }
    const kind = String(ev.type ?? '').replace(/^io\.orch\./, '').replace(/\.v\d+$/, '');
    const domain = kind.split('.')[0] ?? '';
    const li = h('li', { class: `event domain-${/^[a-z]+$/.test(domain) ? domain : 'other'}`, 'data-subject': subject, 'data-type': String(ev.type ?? ''), 'data-id': id });
    const head = h(
      'button',
      { type: 'button', class: 'event-head', 'aria-expanded': 'false' },
      h('span', { class: 'ev-time' }, time(str(ev.time))),
      h('span', { class: 'ev-kind' }, kind),
      h('span', { class: 'ev-summary' }, cut(summarize(ev), 240)),
      h('span', { class: 'ev-subject mono' }, subject),
      h('span', { class: 'ev-principal mono', title: 'who made the change (principal)' }, str(ev.principal)),
    );
    on(head, 'click', () => {
      const open = li.querySelector('pre');
      if (open) {
        open.remove();
        head.setAttribute('aria-expanded', 'false');
      } else {
        li.append(h('pre', { class: 'ev-json' }, cut(JSON.stringify(ev, null, 2), 20000)));
        head.setAttribute('aria-expanded', 'true');
      }
    });
    li.append(head);
    this.list.prepend(li);
    this.n++;
    while (this.list.childElementCount > CAP) this.list.lastElementChild?.remove();
    this.renderCount();
  }

  private renderCount(): void {
    fill(this.count, `${this.list.childElementCount} shown`, this.n > CAP ? ` of ${this.n} received` : '');
    this.onCount(this.list.childElementCount);
  }
}
