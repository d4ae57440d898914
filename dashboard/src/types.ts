// The wire types the dashboard reads, named for its views. Each is taken from the types that the
// build generates from the orchestrator's OpenAPI document (docs/openapi.json -> npm run types ->
// src/generated/openapi.ts), so a change of the API that the dashboard does not follow fails
// `tsc`. Every value comes from the server and is untrusted, so views render it as text only.

import type { components, paths } from './generated/openapi';

type Schema<Name extends keyof components['schemas']> = components['schemas'][Name];

/** The JSON body of the `200` answer to `GET path`. */
type Reply<Path extends keyof paths> = paths[Path]['get'] extends {
  responses: { 200: { content: { 'application/json': infer Body } } };
}
  ? Body
  : never;

/** A page of `GET /api/v1/services` (§3.7). */
export type InstancePage = Reply<'/api/v1/services'>;
/** An instance view (§3.4). */
export type Instance = InstancePage['items'][number];

/** System health (§5.9); sent with 200, 429 or 503. */
export type SystemHealth = Reply<'/api/v1/health'>;

/** Every known service's priority and the mass-change guard (§13.3). */
export type PriorityList = Reply<'/api/v1/priorities'>;
/** A priority view (§13.1). */
export type PriorityView = Schema<'PriorityView'>;
/** A service's priority and its latest changes (§13.3). */
export type PriorityDetail = Reply<'/api/v1/priorities/{service}'>;
/** A priority change record (§13.4). */
export type PriorityChange = Schema<'PriorityChange'>;

/** `GET /api/v1/stack/graph?format=json` (§12.7). */
export type StackGraph = Reply<'/api/v1/stack/graph'>;
/** A managed service as in `GET /api/v1/stack` (§12.7). */
export type StackService = StackGraph['services'][number];
/** The profile of the last start-up run (§12.7). */
export type StackProfile = Reply<'/api/v1/stack/profile'>;
/** `GET /api/v1/stack` (§12.7): the managed services, and the rolling updates in progress. */
export type StackView = Reply<'/api/v1/stack'>;
/** A rolling update of one service: as the stack view lists it, and the data of its
 * `rollout_started|progressed|completed|failed` events. */
export type Rollout = Schema<'RolloutData'>;

/** `GET /api/v1/stack/versions` (§12.11): stored manifest versions, newest first. */
export type ManifestVersions = Reply<'/api/v1/stack/versions'>;
/** `GET /api/v1/stack/diff` (§12.11): two versions compared service by service, field by field. */
export type ManifestDiff = Reply<'/api/v1/stack/diff'>;
/** What an apply or a rollback accepted (§12.7). */
export type StackApplied = Schema<'StackApplied'>;
/** The answer to ending self-preservation (§5.9): the data of its `self_preservation_exited` event. */
export type SelfPreservationData = Schema<'SelfPreservationData'>;

/** A service's output, searched (§12.7). */
export type ServiceLogs = Reply<'/api/v1/stack/services/{name}/logs'>;
/** One line of a service's output, with its unit and node. */
export type ServiceLogLine = Schema<'ServiceLogLine'>;

/** `GET /api/v1/config` (§18): the keys under a prefix. */
export type ConfigList = Reply<'/api/v1/config'>;
/** A key's recorded changes, newest first (§18.2). */
export type ConfigHistory = Reply<'/api/v1/config/{key}/history'>;
/** One recorded change of a key: who, when, before and after (§18.2). */
export type ConfigChange = Schema<'ConfigChange'>;

/** The caller (§14.1). */
export type WhoAmI = Reply<'/api/v1/auth/whoami'>;
/** What a caller may do; each role includes the ones before it. */
export type Role = Schema<'Role'>;

/** `GET /api/v1/cluster`: one orchestrator alone (`single`) or a group of replicas, who leads and
 * each replica's role. */
export type ClusterView = Reply<'/api/v1/cluster'>;
/** The replica that holds the lease: its term and since when. */
export type LeaderView = Schema<'LeaderView'>;
/** A replica of the group; its role is `leader`, `standby` or `gone` (silent for a while). */
export type ReplicaView = Schema<'ReplicaView'>;

/** `GET /api/v1/nodes`: every node whose agent ever reported, by name (§17.3). */
export type NodeList = Reply<'/api/v1/nodes'>;
/** A node: its last report, whether it is heard from, and what is left to place on it. */
export type NodeView = Schema<'NodeInfo'>;
/** CPU (millicores) and memory (MiB). */
export type Resources = Schema<'Resources'>;
/** A process on a node and what its service asked for. */
export type Allocation = Schema<'Allocation'>;

/** `GET /api/v1/workflows`: the latest version of each workflow (§16.1). */
export type WorkflowList = Reply<'/api/v1/workflows'>;
/** A stored workflow; `GET /api/v1/workflows/{name}` adds its TOML `text`. */
export type WorkflowView = Reply<'/api/v1/workflows/{name}'>;
/** A step of a workflow: its kind and the steps it needs. */
export type StepSummary = Schema<'StepSummary'>;
/** `GET /api/v1/executions?workflow=&limit=`: the newest executions first. */
export type ExecutionList = Reply<'/api/v1/executions'>;
/** An execution with each step's state (`GET /api/v1/executions/{id}`). */
export type ExecutionView = Reply<'/api/v1/executions/{id}'>;
/** `GET /api/v1/schedules`: every cron schedule and its next firing. */
export type ScheduleList = Reply<'/api/v1/schedules'>;
export type ScheduleView = ScheduleList[number];
/** `GET /api/v1/queues`: each queue's figures (now, and over the last day). */
export type QueueList = Reply<'/api/v1/queues'>;
export type QueueView = QueueList[number];

/** The JSON body of `POST path`. */
type Request<Path extends keyof paths> = paths[Path]['post'] extends {
  requestBody?: { content: { 'application/json': infer Body } };
}
  ? Body
  : never;
/** `POST /api/v1/workflows/{name}/executions`: the inputs of a new execution. */
export type RunRequest = Request<'/api/v1/workflows/{name}/executions'>;
/** `POST /api/v1/executions/{id}/signal`: a decision for an approval step that waits. */
export type SignalRequest = Request<'/api/v1/executions/{id}/signal'>;

/**
 * A step's state in an execution. The document gives `steps` as a free-form object (step id ->
 * state), so this follows docs/protocol.md §16.1 by hand; views check each field before use.
 * Times are milliseconds since the Unix epoch.
 */
export interface StepState {
  /** `pending`, `retrying`, `running`, `succeeded`, `failed`, `skipped` or `cancelled`. */
  status: string;
  /** Counts from 1; 0 before the first. */
  attempt: number;
  started_at?: number | null;
  /** `running`: when the attempt times out; `retrying`: when the next attempt is due. */
  due_at?: number | null;
  output?: unknown;
  error?: { kind: string; message: string } | null;
}

// The live feed's frames are not HTTP bodies, so the document does not describe them: these two
// follow docs/protocol.md §6 and §14.3 by hand.

/** A CloudEvent 1.0 in structured mode (§6). */
export interface CloudEvent {
  id: string;
  type: string;
  source: string;
  subject?: string;
  time: string;
  /** Who made the change, as authenticated (§6.1). */
  principal?: string;
  data: unknown;
}

/** Frames of GET /api/v1/ws (§14.3). */
export type WsFrame =
  | { type: 'ready'; subjects: string[]; resumed: boolean | null }
  | { type: 'event'; seq: number; subject: string; event: CloudEvent }
  | { type: 'dropped'; reason: string; message: string; resume_after?: string | null }
  | { type: 'error'; message: string; resume_after?: string | null };
