// Workflows (§16): the stored workflows (GET /api/v1/workflows) and the steps of one as a DAG
// (GET /api/v1/workflows/{name}), with a form to run it; the newest executions
// (GET /api/v1/executions) and one of them (GET /api/v1/executions/{id}) as the same DAG coloured
// by each step's state, with its attempts and errors, a Cancel button and the decisions of its
// approval steps; the cron schedules (GET /api/v1/schedules) and the queues' figures
// (GET /api/v1/queues). The app loads what this view shows; the changes (run, cancel, approve,
// reject) are posted from here, and the app is asked to read again what they change.

import { ApiError, postJson } from '../api';
import { h, s, on, fill, type Child } from '../dom';
import { ago, cut, epoch, fromNow, ms, time } from '../format';
import type {
  ExecutionList,
  ExecutionView,
  QueueList,
  Role,
  RunRequest,
  ScheduleList,
  SignalRequest,
  StepState,
  StepSummary,
  WorkflowList,
  WorkflowView,
} from '../types';
import { badge, empty, emptyRow, muted, table } from './common';
import { NODE_H, NODE_W, arrowMarker, layoutLevels, linkPath, type Link } from './graph';

/** Executions listed (the newest). */
export const EXECUTIONS = 50;

/** The states of an execution that are final: nothing runs any more, nothing can be decided. */
const ENDED = new Set(['succeeded', 'failed', 'cancelled']);

/** Each step state's colour, in the order of the legend. */
const STEP_STATES = ['pending', 'retrying', 'running', 'succeeded', 'failed', 'skipped', 'cancelled'];

/** What the app does for the view: read resources again (at once). */
export interface WorkflowsHost {
  reload(...names: ('workflow' | 'executions' | 'execution' | 'queues' | 'schedules')[]): void;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A time with how long ago (or how soon) it is, the ISO text as its title. */
function when(iso: string | null | undefined, relative: (iso: string) => string = ago): HTMLElement {
  if (!iso) return muted('—');
  return h('span', { class: 'nowrap', title: iso }, time(iso), ' ', muted(`(${relative(iso)})`));
}

/** A value of the server (an output, inputs) as short JSON text. */
function json(v: unknown, n = 300): string {
  try {
    return cut(JSON.stringify(v) ?? '', n);
  } catch {
    return '';
  }
}

/** A step's state from the free-form `steps` object, each field checked. */
function stepState(v: unknown): StepState {
  const o = (v && typeof v === 'object' ? v : {}) as Record<string, unknown>;
  const e = o.error && typeof o.error === 'object' ? (o.error as Record<string, unknown>) : null;
  return {
    status: typeof o.status === 'string' ? o.status : 'unknown',
    attempt: typeof o.attempt === 'number' ? o.attempt : 0,
    started_at: typeof o.started_at === 'number' ? o.started_at : null,
    due_at: typeof o.due_at === 'number' ? o.due_at : null,
    output: o.output,
    error: e ? { kind: String(e.kind ?? ''), message: String(e.message ?? '') } : null,
  };
}

function stateClass(status: string): string {
  return STEP_STATES.includes(status) ? `step-${status}` : 'step-unknown';
}

/**
 * The columns of a workflow's DAG: each step one column after the last of the steps it needs;
 * compensation steps (they run only when another step fails) in a column of their own, last.
 */
function columns(steps: StepSummary[]): string[][] {
  const byId = new Map(steps.map((st) => [st.id, st]));
  const level = new Map<string, number>();
  const visit = (id: string, path: Set<string>): number => {
    const known = level.get(id);
    if (known !== undefined) return known;
    if (path.has(id)) return 0; // a cycle: never stored, but nothing from the server is trusted
    path.add(id);
    const needs = (byId.get(id)?.needs ?? []).filter((n) => byId.has(n));
    const l = needs.length ? 1 + Math.max(...needs.map((n) => visit(n, path))) : 0;
    path.delete(id);
    level.set(id, l);
    return l;
  };
  const main = steps.filter((st) => !st.compensation);
  for (const st of main) visit(st.id, new Set());
  const cols: string[][] = [];
  for (const st of main) (cols[level.get(st.id) ?? 0] ??= []).push(st.id);
  const out = cols.filter(Boolean).map((c) => c.sort());
  const comp = steps.filter((st) => st.compensation).map((st) => st.id).sort();
  if (comp.length) out.push(comp);
  return out;
}

/**
 * A workflow's steps as an SVG DAG, left to right in the order they run: an arrow from each step
 * to each step that needs it. With `states`, each step is filled by its state in an execution.
 */
function renderDag(id: string, label: string, steps: StepSummary[], states: Map<string, StepState> | null): SVGSVGElement {
  const cols = columns(steps);
  // Links point from the step that needs to the step it needs (the later column first).
  const links: (Link & { need: string; step: string })[] = [];
  const known = new Set(steps.map((st) => st.id));
  for (const st of steps) for (const n of st.needs) if (known.has(n)) links.push({ from: st.id, to: n, step: st.id, need: n });
  const { pos, width, height, long } = layoutLevels(cols, links);
  const svg = s('svg', { class: 'graph dag', id, viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': label });
  const marker = `${id}-arrow`;
  svg.append(arrowMarker(marker));
  const edges = s('g', { class: 'edges' });
  let arc = 0;
  for (const e of links) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const { d } = linkPath(a, b, long.has(e) ? arc++ : null);
    // The path starts at the step that needs: the arrow head, at its start, points into it.
    const path = s('path', { class: 'edge', d, 'marker-start': `url(#${marker})`, 'data-from': e.need, 'data-to': e.step });
    path.append(s('title', {}, `${e.step} needs ${e.need}`));
    edges.append(path);
  }
  const nodes = s('g', { class: 'nodes' });
  const byId = new Map(steps.map((st) => [st.id, st]));
  for (const [name, p] of pos) {
    const st = byId.get(name);
    const kind = st?.kind ?? '?';
    const state = states ? (states.get(name) ?? stepState(null)) : null;
    const g = s('g', { class: 'node', 'data-step': name, 'data-kind': kind, transform: `translate(${p.x},${p.y})` });
    if (state) {
      g.setAttribute('data-status', state.status);
      g.setAttribute('data-attempt', String(state.attempt));
    }
    const rectClass = `node-rect ${state ? stateClass(state.status) : 'step-def'}${st?.compensation ? ' compensation' : ''}`;
    const second = state
      ? [state.status, state.attempt ? `attempt ${state.attempt}` : '', state.error ? state.error.kind : ''].filter(Boolean).join(' · ')
      : [kind, st?.needs.length ? `needs ${st.needs.join(', ')}` : '', st?.compensation ? 'compensation' : ''].filter(Boolean).join(' · ');
    const title = [
      `${name} (${kind})${st?.compensation ? ', runs only as a compensation' : ''}`,
      st?.needs.length ? `needs ${st.needs.join(', ')}` : '',
      state ? `${state.status}${state.attempt ? `, attempt ${state.attempt}` : ''}` : '',
      state?.error ? `${state.error.kind}: ${state.error.message}` : '',
    ].filter(Boolean);
    g.append(s('rect', { class: rectClass, width: NODE_W, height: NODE_H, rx: 6 }), s('text', { class: 'node-name', x: 10, y: 19 }, cut(name, state ? 15 : 22)));
    if (state) g.append(s('text', { class: 'node-kind', x: NODE_W - 8, y: 19, 'text-anchor': 'end' }, cut(kind, 10)));
    g.append(s('text', { class: 'node-state', x: 10, y: 36 }, cut(second, 27)), s('title', {}, title.join('\n')));
    nodes.append(g);
  }
  svg.append(edges, nodes);
  return svg;
}

function stepLegend(): HTMLElement {
  return h(
    'div',
    { class: 'legend', id: 'execution-legend' },
    ...STEP_STATES.map((st) => h('span', { class: 'legend-item' }, h('span', { class: `swatch ${stateClass(st)}` }), st)),
    h('span', { class: 'legend-item' }, h('span', { class: 'line-solid' }), 'runs before'),
  );
}

/** "3/5 done", counting the steps that ended (succeeded, failed or skipped). */
function progress(e: ExecutionView): string {
  const states = Object.values(e.steps as Record<string, unknown>).map(stepState);
  const done = states.filter((st) => ['succeeded', 'failed', 'skipped', 'cancelled'].includes(st.status)).length;
  return `${done}/${states.length} steps done`;
}

export class WorkflowsView {
  readonly root: HTMLElement;
  selectedWorkflow: string | null = null;
  selectedExecution: string | null = null;
  /** The executions listed are of this workflow only ("" for every workflow). */
  filter = '';

  private role: Role | 'unknown' | null = null;
  private workflows: WorkflowList | null = null;
  private execution: ExecutionView | null = null;
  private detail: WorkflowView | null = null;

  private readonly list = h('div', { class: 'table-wrap' }, muted('Reading the workflows…'));
  private readonly def = h('div', { class: 'workflow-detail', id: 'workflow-detail' }, muted('Pick a workflow to see its steps and run it.'));
  private readonly filterSelect = h('select', { id: 'executions-workflow', 'aria-label': 'Workflow of the executions' });
  private readonly execList = h('div', { class: 'table-wrap' }, muted('Reading the executions…'));
  private readonly exec = h('div', { class: 'execution-detail', id: 'execution-detail', hidden: true });
  private readonly execHead = h('div', { class: 'execution-head' });
  private readonly execActions = h('div', { class: 'execution-actions', id: 'execution-actions' });
  private readonly execDag = h('div', { class: 'graph-box', id: 'execution-graph' });
  private readonly execSteps = h('div', { class: 'table-wrap' });
  private readonly schedules = h('div', { class: 'table-wrap' }, muted('Reading the schedules…'));
  private readonly queues = h('div', { class: 'table-wrap' }, muted('Reading the queues…'));

  // The run form, built once per selected workflow so that what is typed stays.
  private runFor: string | null = null;
  private runForm: HTMLFormElement | null = null;
  // The actions on the selected execution: rebuilt only when what may be done changes, so that
  // a comment being typed is not lost to a refresh.
  private actionsKey = '';
  private confirmCancel = false;
  private busy = false;
  private actionProblem: ApiError | Error | null = null;
  private readonly comments = new Map<string, HTMLInputElement>();

  constructor(private readonly host: WorkflowsHost) {
    on(this.filterSelect, 'change', () => {
      this.filter = this.filterSelect.value;
      this.host.reload('executions');
    });
    this.renderFilter();
    fill(this.exec, this.execHead, this.execActions, stepLegend(), this.execDag, this.execSteps);
    this.root = h(
      'div',
      { class: 'workflows' },
      h('section', { class: 'card' }, h('h2', {}, 'Workflows'), this.list, this.def),
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Executions ', muted(`(newest ${EXECUTIONS})`)),
        h('div', { class: 'toolbar' }, h('label', {}, 'Workflow ', this.filterSelect)),
        this.execList,
        this.exec,
      ),
      h(
        'div',
        { class: 'split' },
        h('section', { class: 'card' }, h('h2', {}, 'Schedules'), this.schedules),
        h('section', { class: 'card' }, h('h2', {}, 'Queues ', muted('(ended: last day)')), this.queues),
      ),
    );
  }

  /** The caller's role; `unknown` when the orchestrator does not say (the server decides). */
  setRole(role: Role | 'unknown'): void {
    if (this.role === role) return;
    this.role = role;
    this.runFor = null; // the form says what the caller may do
    this.renderDetail(null);
    this.renderExecution();
  }

  private mayOperate(): boolean {
    return this.role === 'operator' || this.role === 'admin' || this.role === 'unknown';
  }

  // ---------------------------------------------------------------------------------------------
  // Workflows

  updateWorkflows(list: WorkflowList): void {
    this.workflows = list;
    this.renderFilter();
    const body = h('tbody');
    for (const w of list) {
      const btn = on(h('button', { type: 'button', class: 'link workflow-name', title: `Steps of ${w.name}` }, w.name), 'click', () => this.chooseWorkflow(w.name));
      body.append(
        h(
          'tr',
          { 'data-workflow': w.name, class: w.name === this.selectedWorkflow ? 'selected' : '' },
          h('td', {}, btn),
          h('td', { class: 'num' }, w.version),
          h('td', { class: 'queue' }, w.queue),
          h('td', { class: 'num' }, w.priority),
          h('td', { class: 'description' }, w.description ? cut(w.description, 200) : muted('—')),
          h('td', { class: 'num' }, w.steps.length),
          h('td', { class: 'small' }, when(w.created_at), h('div', { class: 'muted' }, w.created_by)),
        ),
      );
    }
    if (!list.length) body.append(emptyRow(7, 'No workflow is stored. Store one with PUT /api/v1/workflows/{name} or orchestrator workflow put -f FILE.'));
    fill(this.list, h('table', { class: 'grid', id: 'workflows-table' }, h('thead', {}, h('tr', {}, ...['Workflow', 'Version', 'Queue', 'Priority', 'Description', 'Steps', 'Stored'].map((t) => h('th', { scope: 'col' }, t)))), body));
    // An execution is drawn with its workflow's steps: they may have just arrived.
    if (this.execution) this.renderExecution();
  }

  private chooseWorkflow(name: string): void {
    this.selectedWorkflow = name;
    for (const tr of this.list.querySelectorAll('tr[data-workflow]')) tr.classList.toggle('selected', tr.getAttribute('data-workflow') === name);
    this.detail = null;
    fill(this.def, muted(`Reading workflow ${name}…`));
    this.host.reload('workflow');
  }

  /** The selected workflow as read (with its text), or why it could not be read. */
  updateWorkflow(w: WorkflowView | null, error: string | null): void {
    if (w && w.name !== this.selectedWorkflow) return;
    this.detail = w;
    this.renderDetail(error);
  }

  private renderDetail(error: string | null): void {
    const w = this.detail;
    if (!w) {
      if (error) fill(this.def, h('p', { class: 'problem' }, error));
      else if (!this.selectedWorkflow) fill(this.def, muted('Pick a workflow to see its steps and run it.'));
      return;
    }
    if (this.runFor !== w.name || !this.runForm) {
      this.runFor = w.name;
      this.runForm = this.buildRunForm(w.name);
    }
    fill(
      this.def,
      h(
        'div',
        { class: 'workflow-head', id: 'workflow-head', 'data-workflow': w.name, 'data-version': String(w.version) },
        h('h3', {}, `${w.name} `, muted(`version ${w.version}`)),
        h('p', { class: 'muted' }, `queue ${w.queue} · priority ${w.priority} · ${w.steps.length} steps · stored by ${w.created_by} `, when(w.created_at)),
        w.description ? h('p', { class: 'description' }, w.description) : null,
      ),
      w.steps.length ? h('div', { class: 'svg-scroll' }, renderDag('workflow-dag', `Steps of workflow ${w.name}`, w.steps, null)) : empty('This workflow has no step.'),
      w.text ? h('details', { class: 'definition' }, h('summary', {}, 'Definition (TOML)'), h('pre', { class: 'definition-text' }, w.text)) : null,
      this.runForm,
    );
  }

  private buildRunForm(name: string): HTMLFormElement {
    if (!this.mayOperate()) {
      return h('form', { class: 'run-form', id: 'run-form' }, muted('Running a workflow needs the operator role.'));
    }
    const inputs = h('textarea', { id: 'run-inputs', name: 'inputs', rows: 3, spellcheck: 'false', 'aria-label': 'Inputs (a JSON object)' });
    inputs.value = '{}';
    const problem = h('span', { class: 'problem', id: 'run-problem', role: 'alert' });
    const submit = h('button', { type: 'submit', id: 'run-submit' }, `Run ${name}`);
    const form = h('form', { class: 'run-form', id: 'run-form' }, h('label', { for: 'run-inputs' }, 'Inputs ', muted('(a JSON object, e.g. {"service": "billing"})')), inputs, h('div', { class: 'toolbar' }, submit, problem));
    on(form, 'submit', (ev) => {
      ev.preventDefault();
      void this.run(name, inputs.value, submit, problem);
    });
    return form;
  }

  private async run(name: string, text: string, submit: HTMLButtonElement, problem: HTMLElement): Promise<void> {
    let parsed: unknown;
    try {
      parsed = text.trim() ? JSON.parse(text) : {};
    } catch (e) {
      this.showProblem(problem, new Error(`The inputs are not JSON: ${message(e)}`));
      return;
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      this.showProblem(problem, new Error('The inputs must be a JSON object: {"name": value, …}'));
      return;
    }
    submit.disabled = true;
    this.showProblem(problem, null);
    try {
      const body: RunRequest = { inputs: parsed as RunRequest['inputs'] };
      const { body: e } = await postJson<ExecutionView>(`/workflows/${encodeURIComponent(name)}/executions`, body);
      this.selectExecution(e.id, e);
      this.host.reload('executions', 'queues');
    } catch (e) {
      this.showProblem(problem, e);
    } finally {
      submit.disabled = false;
    }
  }

  private showProblem(el: HTMLElement, e: unknown): void {
    if (!e) {
      el.textContent = '';
      el.removeAttribute('data-field');
      return;
    }
    el.textContent = message(e);
    if (e instanceof ApiError && e.field) el.setAttribute('data-field', e.field);
    else el.removeAttribute('data-field');
  }

  // ---------------------------------------------------------------------------------------------
  // Executions

  private renderFilter(): void {
    const names = [...new Set([...(this.filter ? [this.filter] : []), ...(this.workflows ?? []).map((w) => w.name)])].sort();
    fill(this.filterSelect, h('option', { value: '' }, 'every workflow'), ...names.map((n) => h('option', { value: n }, n)));
    this.filterSelect.value = this.filter;
  }

  updateExecutions(list: ExecutionList, filter: string): void {
    if (filter !== this.filter) return; // an answer for a filter no longer chosen
    const body = h('tbody');
    for (const e of list) {
      const btn = on(h('button', { type: 'button', class: 'link mono execution-link', title: e.id }, e.id.slice(0, 8)), 'click', () => this.selectExecution(e.id, null));
      body.append(
        h(
          'tr',
          { 'data-execution': e.id, 'data-status': e.status, class: e.id === this.selectedExecution ? 'selected' : '' },
          h('td', {}, btn),
          h('td', {}, e.workflow, muted(` v${e.version}`)),
          h('td', {}, badge('exec', e.status), e.reason ? h('div', { class: 'small reason' }, cut(e.reason, 120)) : null),
          h('td', { class: 'small' }, progress(e)),
          h('td', { class: 'trigger' }, e.trigger, e.fire_at ? h('div', { class: 'small muted', title: e.fire_at }, `firing ${time(e.fire_at)}`) : null),
          h('td', { class: 'small created' }, when(e.created_at)),
          h('td', { class: 'small created-by' }, e.created_by),
        ),
      );
    }
    if (!list.length) body.append(emptyRow(7, this.filter ? `No execution of ${this.filter} yet.` : 'No execution yet.'));
    fill(this.execList, h('table', { class: 'grid', id: 'executions-table' }, h('thead', {}, h('tr', {}, ...['Execution', 'Workflow', 'Status', 'Progress', 'Trigger', 'Created', 'Created by'].map((t) => h('th', { scope: 'col' }, t)))), body));
  }

  /** Shows execution `id` (`known`: as just answered, until the app reads it again). */
  selectExecution(id: string, known: ExecutionView | null): void {
    if (this.selectedExecution !== id) {
      this.selectedExecution = id;
      this.execution = null;
      this.confirmCancel = false;
      this.actionProblem = null;
      this.comments.clear();
    }
    for (const tr of this.execList.querySelectorAll('tr[data-execution]')) tr.classList.toggle('selected', tr.getAttribute('data-execution') === id);
    if (known) this.updateExecution(known);
    else if (!this.execution) {
      this.exec.hidden = false;
      this.exec.setAttribute('data-execution', id);
      this.exec.removeAttribute('data-status');
      fill(this.execHead, muted(`Reading execution ${id}…`));
      this.execActions.replaceChildren();
      this.execDag.replaceChildren();
      this.execSteps.replaceChildren();
      this.actionsKey = '';
    }
    this.host.reload('execution');
  }

  updateExecution(e: ExecutionView): void {
    if (e.id !== this.selectedExecution) return;
    this.execution = e;
    this.renderExecution();
  }

  private renderExecution(): void {
    const e = this.execution;
    if (!e) return;
    this.exec.hidden = false;
    this.exec.setAttribute('data-execution', e.id);
    this.exec.setAttribute('data-status', e.status);
    const wf = this.workflows?.find((w) => w.name === e.workflow) ?? null;
    const states = new Map<string, StepState>(Object.entries(e.steps as Record<string, unknown>).map(([k, v]) => [k, stepState(v)]));
    // The steps as the workflow's latest version declares them; steps of an older version that it
    // no longer has are drawn on their own.
    const steps: StepSummary[] = (wf?.steps ?? []).filter((st) => states.has(st.id));
    for (const id of states.keys()) if (!steps.some((st) => st.id === id)) steps.push({ id, kind: '?', needs: [], compensation: false });
    const kinds = new Map(steps.map((st) => [st.id, st.kind]));

    fill(
      this.execHead,
      h('h3', {}, 'Execution ', h('span', { class: 'mono', id: 'execution-id' }, e.id), ' ', badge('exec', e.status)),
      h(
        'p',
        { class: 'execution-meta' },
        h('span', {}, h('strong', {}, e.workflow), ` version ${e.version}`),
        h('span', {}, `queue ${e.queue} · priority ${e.priority}`),
        h('span', {}, `trigger ${e.trigger}`, e.fire_at ? ` (firing of ${time(e.fire_at)})` : ''),
        h('span', {}, 'created by ', h('span', { class: 'created-by' }, e.created_by), ' ', when(e.created_at)),
        e.started_at ? h('span', {}, 'started ', when(e.started_at)) : null,
        e.finished_at ? h('span', {}, 'ended ', when(e.finished_at)) : null,
      ),
      e.reason ? h('p', { class: 'problem execution-reason' }, e.reason) : null,
      h('p', { class: 'small' }, muted('inputs '), h('span', { class: 'mono' }, json(e.inputs, 600))),
      wf && wf.version !== e.version ? h('p', { class: 'small muted' }, `Drawn with the steps of version ${wf.version} (the latest); this execution runs version ${e.version}.`) : null,
    );
    this.renderActions(e, kinds, states);
    fill(this.execDag, steps.length ? h('div', { class: 'svg-scroll' }, renderDag('execution-dag', `Steps of execution ${e.id}`, steps, states)) : null);

    const order = columns(steps).flat();
    const body = h('tbody');
    for (const id of order) {
      const st = states.get(id) ?? stepState(null);
      body.append(
        h(
          'tr',
          { 'data-step': id, 'data-status': st.status },
          h('td', { class: 'mono' }, id),
          h('td', {}, kinds.get(id) ?? '?'),
          h('td', {}, badge('step', st.status)),
          h('td', { class: 'num attempt' }, st.attempt),
          h('td', { class: 'small' }, when(epoch(st.started_at))),
          h('td', { class: 'small', title: st.status === 'retrying' ? 'the next attempt is due' : 'the attempt times out' }, st.due_at ? when(epoch(st.due_at), fromNow) : muted('—')),
          h('td', { class: 'small step-error' }, st.error ? h('span', { class: 'problem' }, h('strong', {}, st.error.kind), `: ${cut(st.error.message, 300)}`) : muted('—')),
          h('td', { class: 'small mono step-output' }, st.output === undefined || st.output === null ? muted('—') : json(st.output)),
        ),
      );
    }
    if (!order.length) body.append(emptyRow(8, 'This execution has no step.'));
    fill(this.execSteps, table('grid', ['Step', 'Kind', 'Status', 'Attempt', 'Started', 'Due', 'Error', 'Output'], body));
    this.execSteps.firstElementChild?.setAttribute('id', 'steps-table');
  }

  /** Cancel, and the decisions of the approval steps that wait (status `running`). */
  private renderActions(e: ExecutionView, kinds: Map<string, string>, states: Map<string, StepState>): void {
    const waiting = [...states].filter(([id, st]) => kinds.get(id) === 'approval' && st.status === 'running').map(([id]) => id).sort();
    const ended = ENDED.has(e.status);
    const may = this.mayOperate();
    const problem = this.actionProblem;
    const key = JSON.stringify([e.id, ended, may, waiting, this.confirmCancel, this.busy, problem ? message(problem) : '']);
    if (key === this.actionsKey) return;
    this.actionsKey = key;
    const parts: Child[] = [];
    if (!ended && may) {
      const cancel = this.confirmCancel
        ? h(
            'span',
            { class: 'confirm' },
            'Cancel this execution? Running attempts are stopped and pending steps will not run. ',
            on(h('button', { type: 'button', class: 'danger', id: 'execution-cancel-confirm', disabled: this.busy }, 'Yes, cancel it'), 'click', () => void this.cancel(e.id)),
            ' ',
            on(h('button', { type: 'button', id: 'execution-cancel-back', disabled: this.busy }, 'No'), 'click', () => {
              this.confirmCancel = false;
              this.renderExecution();
            }),
          )
        : on(h('button', { type: 'button', id: 'execution-cancel', disabled: this.busy }, 'Cancel execution'), 'click', () => {
            this.confirmCancel = true;
            this.renderExecution();
          });
      parts.push(h('div', { class: 'toolbar' }, cancel));
    }
    for (const step of waiting) {
      if (!may) {
        parts.push(h('p', { class: 'approval', 'data-step': step }, `Step ${step} waits for a decision (approving or rejecting it needs the operator role).`));
        continue;
      }
      let comment = this.comments.get(step);
      if (!comment) {
        comment = h('input', { type: 'text', class: 'comment', 'data-step': step, maxlength: 1024, placeholder: 'Comment (optional)', 'aria-label': `Comment on step ${step}`, autocomplete: 'off' });
        this.comments.set(step, comment);
      }
      const input = comment;
      parts.push(
        h(
          'div',
          { class: 'approval toolbar', 'data-step': step },
          h('strong', {}, `Step ${step} waits for a decision`),
          input,
          on(h('button', { type: 'button', class: 'approve', 'data-step': step, disabled: this.busy }, 'Approve'), 'click', () => void this.decide(e.id, step, 'approve', input.value)),
          on(h('button', { type: 'button', class: 'reject danger', 'data-step': step, disabled: this.busy }, 'Reject'), 'click', () => void this.decide(e.id, step, 'reject', input.value)),
        ),
      );
    }
    if (problem) {
      const p = h('p', { class: 'problem', id: 'execution-problem', role: 'alert' }, message(problem));
      if (problem instanceof ApiError && problem.field) p.setAttribute('data-field', problem.field);
      parts.push(p);
    }
    fill(this.execActions, ...parts);
  }

  private async act(id: string, path: string, body?: SignalRequest): Promise<void> {
    this.busy = true;
    this.actionProblem = null;
    this.renderExecution();
    try {
      const { body: e } = await postJson<ExecutionView>(path, body);
      this.confirmCancel = false;
      this.busy = false;
      this.updateExecution(e);
    } catch (err) {
      this.busy = false;
      if (id === this.selectedExecution) this.actionProblem = err instanceof Error ? err : new Error(String(err));
      this.renderExecution();
    }
    this.host.reload('execution', 'executions', 'queues');
  }

  private cancel(id: string): Promise<void> {
    return this.act(id, `/executions/${encodeURIComponent(id)}/cancel`);
  }

  private decide(id: string, step: string, decision: SignalRequest['decision'], comment: string): Promise<void> {
    const body: SignalRequest = { step, decision };
    if (comment.trim()) body.comment = comment.trim();
    return this.act(id, `/executions/${encodeURIComponent(id)}/signal`, body);
  }

  // ---------------------------------------------------------------------------------------------
  // Schedules and queues

  updateSchedules(list: ScheduleList): void {
    const body = h('tbody');
    for (const sc of list) {
      body.append(
        h(
          'tr',
          { 'data-workflow': sc.workflow, 'data-index': String(sc.index) },
          h('td', {}, sc.workflow, muted(` #${sc.index} · v${sc.version}`)),
          h('td', { class: 'mono cron' }, sc.cron),
          h('td', { class: 'timezone' }, sc.timezone),
          h('td', { class: 'overlap' }, sc.overlap),
          h('td', { class: 'catch-up' }, sc.catch_up),
          h('td', { class: 'small next', 'data-next': sc.next_fire_at }, when(sc.next_fire_at, fromNow)),
          h('td', { class: 'small last' }, sc.last_fired_at ? when(sc.last_fired_at) : muted('never')),
        ),
      );
    }
    if (!list.length) body.append(emptyRow(7, 'No workflow has a schedule.'));
    fill(this.schedules, h('table', { class: 'grid', id: 'schedules-table' }, h('thead', {}, h('tr', {}, ...['Workflow', 'Cron', 'Time zone', 'Overlap', 'Catch up', 'Next firing', 'Last firing'].map((t) => h('th', { scope: 'col' }, t)))), body));
  }

  updateQueues(list: QueueList): void {
    const body = h('tbody');
    const num = (v: number, cls: string) => h('td', { class: `num ${cls}` }, v);
    for (const q of list) {
      body.append(
        h(
          'tr',
          { 'data-queue': q.queue },
          h('td', {}, q.queue),
          num(q.waiting, 'waiting'),
          num(q.running, 'running'),
          num(q.succeeded, 'succeeded'),
          num(q.failed, 'failed'),
          num(q.cancelled, 'cancelled'),
          h('td', { class: 'num wait' }, q.wait_p50_ms === null || q.wait_p50_ms === undefined ? muted('—') : ms(q.wait_p50_ms), ' / ', q.wait_p99_ms === null || q.wait_p99_ms === undefined ? muted('—') : ms(q.wait_p99_ms)),
        ),
      );
    }
    if (!list.length) body.append(emptyRow(7, 'No queue has had an execution yet.'));
    fill(this.queues, h('table', { class: 'grid', id: 'queues-table' }, h('thead', {}, h('tr', {}, ...['Queue', 'Waiting', 'Running', 'Succeeded', 'Failed', 'Cancelled', 'Wait p50 / p99'].map((t) => h('th', { scope: 'col' }, t)))), body));
  }
}
