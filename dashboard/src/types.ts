// Shapes of the orchestrator's HTTP replies and WebSocket frames that the dashboard reads
// (docs/protocol.md §3.4, §5.9, §6, §12.7, §13). Only the fields shown are declared; every
// value comes from the server and is untrusted, so views render it as text only.

export type Health = 'passing' | 'warning' | 'critical';
export type Aggregate = 'healthy' | 'degraded' | 'critical';

export interface CheckState {
  spec: { id: string; kind: string };
  status: Health;
  output?: string;
  since?: string;
}

/** An instance view (§3.4). */
export interface Instance {
  id: string;
  name: string;
  version: string;
  address: string;
  port: number;
  protocol: string;
  tags: string[];
  metadata: Record<string, string>;
  dependencies: string[];
  weight: number;
  ttl_seconds: number;
  health: Health;
  lease: Health;
  checks?: CheckState[];
  maintenance?: { reason: string; since: string };
  flapping_since?: string;
  critical_since?: string;
  registered_at: string;
  updated_at: string;
  revision: number;
  last_heartbeat_at?: string;
  expires_at?: string;
}

export interface InstancePage {
  items: Instance[];
  next: string | null;
}

/** System health (§5.9); sent with 200, 429 or 503. */
export interface SystemHealth {
  state: Aggregate;
  healthy: number;
  degraded: number;
  critical: number;
  self_preservation: boolean;
  checker?: { checks: number; lagging: boolean; runs: number; drift_p99_ms: number; skipped: number };
  critical_services: string[];
  critical_services_down: string[];
  services_in_maintenance: string[];
}

export interface Adjustment {
  requested: number;
  source: string;
  reason: string;
  at: string;
  expires_at?: string;
}

/** A priority view (§13.1). */
export interface PriorityView {
  service: string;
  effective: number;
  baseline: number;
  baseline_source: 'default' | 'manifest' | 'operator';
  min: number;
  max: number;
  pinned: boolean;
  adjustment?: Adjustment;
  updated_at?: string;
}

export interface GuardView {
  holding: boolean;
  since?: string;
  until?: string;
  held: string[];
  changed_in_window: number;
  limit: number;
}

export interface PriorityList {
  priorities: PriorityView[];
  guard: GuardView;
}

/** A priority change record (§13.4). */
export interface PriorityChange {
  id: string;
  service: string;
  action: string;
  outcome: string;
  requested?: number;
  previous: number;
  effective: number;
  source: string;
  reason: string;
  guardrail?: string;
  detail?: string;
  expires_at?: string;
  at: string;
}

export interface PriorityDetail {
  priority: PriorityView;
  history: PriorityChange[];
}

/** A managed service as in GET /api/v1/stack (§12.7). */
export interface StackService {
  name: string;
  node: string;
  state: string;
  reason?: string;
  pid?: number;
  restarts: number;
  since?: string;
  priority: number;
  critical: boolean;
  depends_on: string[];
  level: number;
}

export interface StackEdge {
  from: string;
  to: string;
  condition: string;
  required: boolean;
}

export interface StackGraph {
  levels: string[][];
  edges: StackEdge[];
  services: StackService[];
}

export interface ChainLink {
  service: string;
  started_ms: number;
  ready_ms: number;
  took_ms: number;
}

export interface ProfileService {
  queued_ms?: number;
  started_ms?: number;
  ready_ms?: number;
}

export interface StackProfile {
  run_id: string;
  manifest_version: number;
  started_at: string;
  finished: boolean;
  outcome?: string;
  wall_ms: number;
  critical_path_ms: number;
  efficiency: number;
  chain: ChainLink[];
  bottlenecks: { service: string; took_ms: number; why: string }[];
  services: Record<string, ProfileService>;
}

export interface WhoAmI {
  name: string;
  role: string;
}

/** A CloudEvent 1.0 in structured mode (§6). */
export interface CloudEvent {
  id: string;
  type: string;
  source: string;
  subject?: string;
  time: string;
  data: unknown;
}

/** Frames of GET /api/v1/ws. */
export type WsFrame =
  | { type: 'ready'; subjects: string[]; resumed: boolean | null }
  | { type: 'event'; seq: number; subject: string; event: CloudEvent }
  | { type: 'dropped'; reason: string; message: string; resume_after?: string | null }
  | { type: 'error'; message: string; resume_after?: string | null };
