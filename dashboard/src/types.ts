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

/** The caller (§14.1). */
export type WhoAmI = Reply<'/api/v1/auth/whoami'>;

/** `GET /api/v1/cluster`: one orchestrator alone (`single`) or a group of replicas, who leads and
 * each replica's role. */
export type ClusterView = Reply<'/api/v1/cluster'>;
/** The replica that holds the lease: its term and since when. */
export type LeaderView = Schema<'LeaderView'>;
/** A replica of the group; its role is `leader`, `standby` or `gone` (silent for a while). */
export type ReplicaView = Schema<'ReplicaView'>;

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
