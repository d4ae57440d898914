// The dashboard: builds the page, reads everything once, then keeps it current from the event
// stream (each event schedules a read of what it affects) and a slow periodic read as a safety net.

import './style.css';
import { ApiError, getJson, onUnauthorized, postJson } from './api';
import { adoptFragmentToken, clearToken, setToken, token } from './auth';
import { h, on, fill } from './dom';
import { EventStream, type StreamState } from './stream';
import { Loader } from './refresh';
import type {
  CloudEvent,
  ClusterView,
  ExecutionList,
  ExecutionView,
  Instance,
  InstancePage,
  NodeList,
  PriorityChange,
  PriorityDetail,
  PriorityList,
  PriorityView,
  QueueList,
  ScheduleList,
  SelfPreservationData,
  StackGraph,
  StackProfile,
  StackService,
  StackView,
  SystemHealth,
  WhoAmI,
  WorkflowList,
  WorkflowView,
} from './types';
import { renderCluster, renderClusterSummary } from './views/cluster';
import { FeedView } from './views/feed';
import { legend, renderGraph } from './views/graph';
import { renderProfile } from './views/gantt';
import { renderBanner } from './views/health';
import { ConfigView } from './views/config';
import { HistoryView } from './views/history';
import { LogsView } from './views/logs';
import { renderNodes } from './views/nodes';
import { renderPlacement } from './views/placement';
import { HISTORY, PrioritiesView } from './views/priorities';
import { renderRollouts } from './views/rollouts';
import { ServicesView, type ServicesModel } from './views/services';
import { EXECUTIONS, WorkflowsView } from './views/workflows';

const SAFETY_REFRESH_MS = 10_000;
const PAGE_SIZE = 1000;
const MAX_PAGES = 10;
/** Agents report their node every 2 s by default (§17.1): a change of what runs on a node shows in
 * the inventory at the next report, so the nodes are read again a little after that. */
const NODE_REPORT_MS = 2_500;

function message(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

class App {
  private authorized = true;
  private readonly errors = new Map<string, string>();
  private readonly loaders = new Map<string, Loader>();
  private readonly stream: EventStream;
  private subjects = '';
  private model: ServicesModel = { instances: null, truncated: false, priorities: new Map(), lastChange: new Map() };
  /** The stream is live: missed events are impossible, so absent resources need no polling. */
  private live = false;
  /** Resources that answered 404 (no stack, no run yet); lifecycle events bring them back. */
  private readonly absent = new Set<string>();
  /** The updated_at each last change was read for, so a history is read again only after a change. */
  private readonly lastChangeFor = new Map<string, string>();

  // Page parts.
  private readonly banner = h('div', { class: 'banner banner-unknown', id: 'health-banner', role: 'status' }, 'Reading system health…');
  private readonly errorStrip = h('div', { class: 'errors', id: 'errors', role: 'alert', hidden: true });
  private readonly conn = h('span', { class: 'conn conn-connecting', id: 'connection', role: 'status' }, 'connecting…');
  private readonly who = h('span', { class: 'who', id: 'whoami' });
  private readonly clusterSummary = h('button', { type: 'button', class: 'link cluster-summary', id: 'cluster-summary', title: 'Show the replicas', hidden: true });
  private readonly signOut = h('button', { type: 'button', class: 'link', id: 'change-token' }, 'Change token');
  private readonly login = h('div', { class: 'login', id: 'login', hidden: true });
  private readonly tabs = new Map<string, { button: HTMLButtonElement; panel: HTMLElement }>();
  private readonly services: ServicesView;
  private readonly feed: FeedView;
  private readonly priorities: PrioritiesView;
  private readonly workflows: WorkflowsView;
  private readonly history: HistoryView;
  private readonly logs = new LogsView();
  private readonly config: ConfigView;
  private readonly graphEl = h('div', { class: 'graph-box', id: 'graph' });
  private readonly profileEl = h('div', { class: 'profile-box', id: 'profile' });
  private readonly stackMeta = h('p', { class: 'stack-meta muted', id: 'stack-meta' });
  private readonly clusterEl = h('div', { class: 'cluster', id: 'cluster' });
  private readonly placementEl = h('div', { class: 'placement-box', id: 'placement' });
  private readonly rolloutsEl = h('div', { class: 'rollouts-box', id: 'rollouts' });
  /** Shown only while a rolling update is in progress. */
  private readonly rolloutsCard = h('section', { class: 'card', id: 'rollouts-card', hidden: true }, h('h2', {}, 'Rolling updates'), this.rolloutsEl);
  private readonly nodesEl = h('div', { class: 'nodes', id: 'nodes' });
  /** The last read of the nodes, rendered again when the stack's replicas change. */
  private nodes: NodeList | null = null;
  /** The stack's services by name, from the last graph read: the Nodes view names the service
   * of each replica (`api-1` of `api`) and what it asked for. */
  private managed = new Map<string, StackService>();
  /** The node chosen from a service's row in the Stack view, marked in the Nodes view. */
  private selectedNode: string | null = null;
  /** The read of the nodes due after the agents' next report (one for a burst of changes). */
  private nodesAfterReport: number | undefined;

  constructor(private readonly root: HTMLElement) {
    this.services = new ServicesView((name) => this.openHistory(name));
    this.feed = new FeedView(
      (subjects) => {
        this.subjects = subjects;
        this.stream.start(subjects);
      },
      (n) => this.setTabCount('events', n),
    );
    this.priorities = new PrioritiesView((name) => this.selectHistory(name));
    this.workflows = new WorkflowsView({ reload: (...names) => names.forEach((n) => this.loaders.get(n)?.schedule(0)) });
    this.history = new HistoryView({ reload: (...names) => names.forEach((n) => this.loaders.get(n)?.schedule(0)) });
    this.config = new ConfigView({ reload: (...names) => names.forEach((n) => this.loaders.get(n)?.schedule(0)) });
    this.stream = new EventStream({
      token,
      onEvent: (subject, ev) => this.onEvent(subject, ev),
      onState: (st) => {
        this.live = st.kind === 'live';
        this.renderConn(st);
      },
      onLive: (subjects) => {
        this.feed.setSubjects(subjects);
        // Whatever happened while we were not connected is read again.
        this.refreshAll();
      },
      onFailure: () => this.loaders.get('whoami')?.schedule(0),
    });
    onUnauthorized(() => this.unauthorized());
    this.build();
    this.addLoaders();
  }

  private build(): void {
    on(this.signOut, 'click', () => this.askToken('Paste another token.'));
    on(this.clusterSummary, 'click', () => this.showTab('cluster'));
    renderCluster(this.clusterEl, null);
    renderNodes(this.nodesEl, null, this.managed);
    const header = h(
      'header',
      { class: 'top' },
      h('h1', {}, 'Orchestrator'),
      h('div', { class: 'top-right' }, this.clusterSummary, this.conn, this.who, this.signOut, h('a', { href: '/api-docs/', class: 'api-link', id: 'api-docs-link' }, 'API reference')),
    );
    const nav = h('nav', { class: 'tabs', role: 'tablist', 'aria-label': 'Views' });
    const main = h('main', { class: 'content' });
    const stack = h(
      'div',
      { class: 'stack' },
      h('section', { class: 'card' }, h('h2', {}, 'Dependency graph'), this.stackMeta, legend(), this.graphEl),
      this.rolloutsCard,
      h('section', { class: 'card' }, h('h2', {}, 'Where each service runs'), this.placementEl),
      h('section', { class: 'card' }, h('h2', {}, 'Start-up timeline'), this.profileEl),
      this.history.root,
    );
    const panels: [string, string, HTMLElement][] = [
      ['services', 'Services', this.services.root],
      ['stack', 'Stack', stack],
      ['nodes', 'Nodes', h('section', { class: 'card' }, h('h2', {}, 'Nodes'), this.nodesEl)],
      ['events', 'Events', this.feed.root],
      ['logs', 'Logs', this.logs.root],
      ['config', 'Config', this.config.root],
      ['priorities', 'Priorities', this.priorities.root],
      ['workflows', 'Workflows', this.workflows.root],
      ['cluster', 'Cluster', h('section', { class: 'card' }, h('h2', {}, 'Replicas'), this.clusterEl)],
    ];
    for (const [id, label, content] of panels) {
      const button = h('button', { type: 'button', role: 'tab', id: `tab-${id}`, 'aria-controls': `panel-${id}`, 'aria-selected': 'false' }, label, h('span', { class: 'count' }));
      const panel = h('section', { id: `panel-${id}`, role: 'tabpanel', 'aria-labelledby': `tab-${id}`, class: 'panel', hidden: true }, content);
      on(button, 'click', () => this.showTab(id));
      nav.append(button);
      main.append(panel);
      this.tabs.set(id, { button, panel });
    }
    fill(this.root, header, this.banner, this.errorStrip, this.login, nav, main);
    this.showTab('services');
  }

  private showTab(id: string): void {
    for (const [key, t] of this.tabs) {
      const active = key === id;
      t.button.setAttribute('aria-selected', String(active));
      t.button.classList.toggle('active', active);
      t.panel.hidden = !active;
    }
  }

  private setTabCount(id: string, n: number): void {
    const c = this.tabs.get(id)?.button.querySelector('.count');
    if (c) c.textContent = n ? ` ${n}` : '';
  }

  // ---------------------------------------------------------------------------------------------
  // Loading

  private addLoaders(): void {
    const add = (name: string, load: () => Promise<void>) =>
      this.loaders.set(name, new Loader(name, load, (n, e) => this.report(n, e), () => this.authorized));
    add('whoami', () => this.loadWhoami());
    add('health', () => this.loadHealth());
    add('services', () => this.loadServices());
    add('priorities', () => this.loadPriorities());
    add('history', () => this.loadHistory());
    add('graph', () => this.loadGraph());
    add('profile', () => this.loadProfile());
    add('stack', () => this.loadStack());
    add('versions', async () => this.history.update(await HistoryView.read()));
    add('config', () => this.config.load());
    add('cluster', () => this.loadCluster());
    add('nodes', () => this.loadNodes());
    add('workflows', () => this.loadWorkflows());
    add('workflow', () => this.loadWorkflow());
    add('executions', () => this.loadExecutions());
    add('execution', () => this.loadExecution());
    add('schedules', () => this.loadSchedules());
    add('queues', () => this.loadQueues());
  }

  private refresh(...names: string[]): void {
    for (const n of names) this.loaders.get(n)?.schedule();
  }

  /**
   * Reads every resource. The periodic safety net skips those known to be absent while the stream
   * is live: a lifecycle event announces a new stack or run, and re-reads them.
   */
  private refreshAll(periodic = false): void {
    for (const [name, l] of this.loaders) {
      if (name === 'whoami' || (periodic && this.live && this.absent.has(name))) continue;
      l.schedule(0);
    }
  }

  private report(name: string, e: unknown): void {
    if (e instanceof ApiError && e.status === 401) return; // the token form says it
    if (e instanceof DOMException && e.name === 'AbortError') return;
    if (e === null) {
      if (!this.errors.delete(name)) return;
    } else {
      this.errors.set(name, message(e));
    }
    const list = [...this.errors];
    this.errorStrip.hidden = list.length === 0;
    fill(this.errorStrip, ...list.map(([n, m]) => h('div', { class: 'error', 'data-source': n }, h('strong', {}, `${n}: `), m)));
  }

  private async loadWhoami(): Promise<void> {
    try {
      const { body } = await getJson<WhoAmI>('/auth/whoami');
      fill(this.who, 'Signed in as ', h('strong', { id: 'whoami-name' }, String(body.name)), ' · ', h('span', { class: 'role', id: 'whoami-role' }, String(body.role)));
      this.role = String(body.role);
      this.workflows.setRole(body.role);
      this.history.setRole(body.role);
      this.config.setRole(body.role);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        fill(this.who, 'caller unknown');
        this.workflows.setRole('unknown');
        this.history.setRole('unknown');
        this.config.setRole('unknown');
        return;
      }
      throw e;
    }
  }

  private async loadHealth(): Promise<void> {
    try {
      // status_codes=false: the state is in the body; a 429/503 would be logged by the browser as an error.
      const { body } = await getJson<SystemHealth | { error: unknown }>('/health?status_codes=false', { accept: [503] });
      if ('error' in body || typeof (body as SystemHealth).state !== 'string') throw new ApiError(503, 'unavailable', 'the orchestrator cannot say its health now');
      renderBanner(this.banner, body as SystemHealth, null, this.mayOperate() ? () => void this.endSelfPreservation() : undefined);
      document.title = `${(body as SystemHealth).state} · Orchestrator`;
    } catch (e) {
      renderBanner(this.banner, null, message(e));
      document.title = 'Orchestrator';
      throw e;
    }
  }

  private role: string = 'unknown';

  private mayOperate(): boolean {
    return this.role === 'operator' || this.role === 'admin' || this.role === 'unknown';
  }

  /** Ends self-preservation at the operator's word, with the reason they give (§5.9). */
  private async endSelfPreservation(): Promise<void> {
    const reason = window.prompt('End self-preservation: every overdue instance expires now. Why (recorded with your name)?', 'deliberate scale-down');
    if (reason === null) return;
    try {
      // The answer is the data of the self_preservation_exited event, which the feed shows.
      await postJson<SelfPreservationData>('/health/self-preservation/end', reason.trim() ? { reason: reason.trim() } : {});
      this.report('self-preservation', null);
    } catch (e) {
      this.report('self-preservation', e);
    }
    this.refresh('health', 'services');
  }

  private async loadServices(): Promise<void> {
    const items: Instance[] = [];
    let after: string | null = null;
    let truncated = false;
    for (let page = 0; ; page++) {
      if (page === MAX_PAGES) {
        truncated = true;
        break;
      }
      const q: string = `?limit=${PAGE_SIZE}${after ? `&after=${encodeURIComponent(after)}` : ''}`;
      const res: { body: InstancePage } = await getJson<InstancePage>(`/services${q}`);
      items.push(...res.body.items);
      after = res.body.next;
      if (!after) break;
    }
    this.model = { ...this.model, instances: items, truncated };
    this.services.update(this.model);
    this.setTabCount('services', new Set(items.map((i) => i.name)).size);
  }

  private async loadPriorities(): Promise<void> {
    const { body } = await getJson<PriorityList>('/priorities');
    const map = new Map<string, PriorityView>(body.priorities.map((p) => [p.service, p]));
    this.model = { ...this.model, priorities: map };
    this.services.update(this.model);
    this.priorities.updateList(body);
    await this.loadLastChanges(body.priorities);
  }

  /**
   * Who changed each priority last and why: the newest change that moved it, from the service's
   * history. Read only for services whose priority changed since the last read, a few at a time.
   */
  private async loadLastChanges(views: PriorityView[]): Promise<void> {
    const stale = views.filter((p) => p.updated_at && this.lastChangeFor.get(p.service) !== p.updated_at).slice(0, 40);
    if (!stale.length) return;
    const moved = new Set(['applied', 'clamped', 'expired']);
    const queue = [...stale];
    const worker = async () => {
      for (let p = queue.shift(); p; p = queue.shift()) {
        const { body } = await getJson<PriorityDetail>(`/priorities/${encodeURIComponent(p.service)}?history=20`);
        const change: PriorityChange | undefined = body.history.find((c) => moved.has(c.outcome));
        if (change) this.model.lastChange.set(p.service, change);
        else this.model.lastChange.delete(p.service);
        this.lastChangeFor.set(p.service, p.updated_at!);
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    this.services.update(this.model);
  }

  private async loadHistory(): Promise<void> {
    const service = this.priorities.selected;
    if (!service) return;
    try {
      const { body } = await getJson<PriorityDetail>(`/priorities/${encodeURIComponent(service)}?history=${HISTORY}`);
      if (this.priorities.selected === service) this.priorities.updateHistory(body, null);
    } catch (e) {
      this.priorities.updateHistory(null, message(e));
      throw e;
    }
  }

  /** GET a stack route; 404 means no stack or no run yet, an empty state rather than an error. */
  private async stackRead<T>(name: string, path: string): Promise<T | null> {
    try {
      const { body } = await getJson<T>(path);
      this.absent.delete(name);
      return body;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        this.absent.add(name);
        return null;
      }
      throw e;
    }
  }

  private async loadGraph(): Promise<void> {
    const value = await this.stackRead<StackGraph>('graph', '/stack/graph?format=json');
    renderGraph(this.graphEl, value);
    renderPlacement(this.placementEl, value, (node) => this.openNode(node));
    this.managed = new Map((value?.services ?? []).map((sv) => [sv.name, sv]));
    this.logs.setServices((value?.services ?? []).map((sv) => sv.replica_of ?? sv.name));
    renderNodes(this.nodesEl, this.nodes, this.managed, this.selectedNode);
    if (value) {
      const counts = new Map<string, number>();
      for (const sv of value.services) counts.set(sv.state, (counts.get(sv.state) ?? 0) + 1);
      this.stackMeta.textContent = `${value.services.length} managed services · ${value.edges.length} dependencies · ${[...counts].map(([k, v]) => `${v} ${k}`).join(', ')}`;
    } else {
      this.stackMeta.textContent = '';
    }
  }

  private async loadProfile(): Promise<void> {
    const value = await this.stackRead<StackProfile>('profile', '/stack/profile');
    renderProfile(this.profileEl, value);
  }

  /** The stack itself, for its rolling updates in progress (the graph has the services). */
  private async loadStack(): Promise<void> {
    const value = await this.stackRead<StackView>('stack', '/stack');
    this.rolloutsCard.hidden = renderRollouts(this.rolloutsEl, value) === 0;
  }

  private async loadCluster(): Promise<void> {
    const { body } = await getJson<ClusterView>('/cluster');
    renderCluster(this.clusterEl, body);
    renderClusterSummary(this.clusterSummary, body);
    this.setTabCount('cluster', body.mode === 'replicated' ? body.replicas.length : 0);
  }

  private async loadNodes(): Promise<void> {
    const { body } = await getJson<NodeList>('/nodes');
    this.nodes = body;
    renderNodes(this.nodesEl, body, this.managed, this.selectedNode);
    this.setTabCount('nodes', body.nodes.length);
  }

  private async loadWorkflows(): Promise<void> {
    const { body } = await getJson<WorkflowList>('/workflows');
    this.workflows.updateWorkflows(body);
    this.setTabCount('workflows', body.length);
  }

  private async loadWorkflow(): Promise<void> {
    const name = this.workflows.selectedWorkflow;
    if (!name) return;
    try {
      const { body } = await getJson<WorkflowView>(`/workflows/${encodeURIComponent(name)}`);
      this.workflows.updateWorkflow(body, null);
    } catch (e) {
      if (this.workflows.selectedWorkflow === name) this.workflows.updateWorkflow(null, message(e));
      throw e;
    }
  }

  private async loadExecutions(): Promise<void> {
    const filter = this.workflows.filter;
    const q = `?limit=${EXECUTIONS}${filter ? `&workflow=${encodeURIComponent(filter)}` : ''}`;
    const { body } = await getJson<ExecutionList>(`/executions${q}`);
    this.workflows.updateExecutions(body, filter);
  }

  private async loadExecution(): Promise<void> {
    const id = this.workflows.selectedExecution;
    if (!id) return;
    const { body } = await getJson<ExecutionView>(`/executions/${encodeURIComponent(id)}`);
    this.workflows.updateExecution(body);
  }

  private async loadSchedules(): Promise<void> {
    const { body } = await getJson<ScheduleList>('/schedules');
    this.workflows.updateSchedules(body);
  }

  private async loadQueues(): Promise<void> {
    const { body } = await getJson<QueueList>('/queues');
    this.workflows.updateQueues(body);
  }

  // ---------------------------------------------------------------------------------------------
  // Events

  private onEvent(subject: string, ev: CloudEvent): void {
    if (!ev || typeof ev !== 'object') return;
    try {
      this.feed.add(subject, ev);
      this.report('events', null);
    } catch (e) {
      // A malformed event must not stop the stream: say so, and go on.
      this.report('events', e);
    }
    // <prefix>.evt.<domain>.<service or node>.<kind>
    const tokens = subject.split('.');
    const at = tokens.indexOf('evt');
    const domain = at >= 0 ? tokens[at + 1] : undefined;
    const about = at >= 0 ? tokens[at + 2] : undefined;
    switch (domain) {
      case 'registry':
        this.refresh('services', 'health', 'priorities');
        break;
      case 'health':
        this.refresh('services', 'health');
        break;
      case 'lifecycle':
        // A rollout's events, and its replicas' own, move its progress on.
        this.refresh('graph', 'profile', 'stack');
        // A new version (manifest_applied, an auto-revert's among them) joins the history.
        if (about === '_system') this.refresh('priorities', 'versions');
        // What runs on a node changed: its agent says so at its next report. A timer of its own,
        // so that it does not hold back a read asked for sooner.
        if (this.nodesAfterReport === undefined) {
          this.nodesAfterReport = window.setTimeout(() => {
            this.nodesAfterReport = undefined;
            this.refresh('nodes');
          }, NODE_REPORT_MS);
        }
        break;
      case 'resource':
        // A node joined, went down or came back (§17.2), or a service was lost with its node or
        // preempted: the nodes, and where the services run.
        this.refresh('nodes');
        if (/\.(lost|preempted)\.v\d+$/.test(String(ev.type ?? ''))) this.refresh('graph');
        break;
      case 'priority':
        this.refresh('priorities');
        if (about && about === this.priorities.selected) this.refresh('history');
        break;
      case 'config':
        // A key changed or was deleted (§18.3).
        this.refresh('config');
        break;
      case 'system':
        this.refresh('health', 'priorities');
        break;
      case 'workflow': {
        // An execution or one of its steps moved (§16.3): the lists and figures change with it, a
        // firing moves its schedule on, and the execution shown is read again if it is this one.
        this.refresh('executions', 'queues', 'schedules');
        const data = ev.data && typeof ev.data === 'object' ? (ev.data as { execution_id?: unknown }) : {};
        const id = typeof data.execution_id === 'string' ? data.execution_id : ev.subject;
        if (id && id === this.workflows.selectedExecution) this.refresh('execution');
        break;
      }
      case 'cluster':
        // A new term: who leads and each replica's role. A replica that stops answering has no
        // event (it is shown gone once silent), so the periodic read covers that.
        this.refresh('cluster');
        break;
      default:
        break;
    }
  }

  private renderConn(st: StreamState): void {
    let text: string;
    let cls: string;
    switch (st.kind) {
      case 'live':
        text = 'live';
        cls = 'live';
        break;
      case 'connecting':
        text = 'connecting…';
        cls = 'connecting';
        break;
      case 'reconnecting':
        text = `reconnecting in ${Math.ceil(st.inMs / 1000)} s (${st.why})`;
        cls = 'reconnecting';
        break;
      default:
        text = 'not connected';
        cls = 'stopped';
    }
    this.conn.className = `conn conn-${cls}`;
    this.conn.dataset.state = st.kind;
    this.conn.textContent = `● ${text}`;
  }

  // ---------------------------------------------------------------------------------------------
  // Nodes

  private openNode(node: string): void {
    this.selectedNode = node;
    renderNodes(this.nodesEl, this.nodes, this.managed, node);
    this.showTab('nodes');
    this.nodesEl.querySelector<HTMLElement>('tr.node-row.selected')?.scrollIntoView({ block: 'nearest' });
  }

  // ---------------------------------------------------------------------------------------------
  // Priorities history

  private openHistory(service: string): void {
    this.showTab('priorities');
    this.selectHistory(service);
  }

  private selectHistory(service: string): void {
    this.priorities.choose(service);
    this.loaders.get('history')?.schedule(0);
  }

  // ---------------------------------------------------------------------------------------------
  // Auth

  private unauthorized(): void {
    if (!this.authorized) return;
    this.askToken(token() ? 'The token was refused: paste a valid one.' : 'This orchestrator needs a token: paste one.');
  }

  private askToken(why: string): void {
    this.authorized = false;
    this.stream.stop();
    renderBanner(this.banner, null, 'not signed in');
    const input = h('input', { type: 'password', id: 'token-input', name: 'token', autocomplete: 'off', placeholder: 'API token', 'aria-label': 'API token', required: true });
    const form = h('form', { class: 'login-form' }, h('p', {}, why), input, h('button', { type: 'submit' }, 'Use token'));
    if (token()) {
      form.append(
        on(h('button', { type: 'button' }, 'Cancel'), 'click', () => this.resume()),
        on(h('button', { type: 'button', class: 'link' }, 'Forget the stored token'), 'click', () => {
          clearToken();
          this.resume();
        }),
      );
    }
    on(form, 'submit', (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      setToken(value);
      this.resume();
    });
    fill(this.login, form);
    this.login.hidden = false;
    input.focus();
  }

  private resume(): void {
    this.login.hidden = true;
    this.login.replaceChildren();
    this.authorized = true;
    this.errors.clear();
    this.errorStrip.hidden = true;
    this.errorStrip.replaceChildren();
    void this.start();
  }

  /**
   * Asks who we are first, so that a refused token brings up the token form before anything
   * else is tried; then reads everything and opens the event stream.
   */
  async start(): Promise<void> {
    await this.loaders.get('whoami')?.run();
    if (!this.authorized) return;
    this.refreshAll();
    this.stream.start(this.subjects);
  }

  run(): void {
    void this.start();
    window.setInterval(() => {
      if (this.authorized) this.refreshAll(true);
    }, SAFETY_REFRESH_MS);
  }
}

adoptFragmentToken();
const root = document.getElementById('app');
if (root) new App(root).run();
