// The live event stream: GET /api/v1/ws as a WebSocket. Reconnects with back-off and resumes
// after the last event seen, so no event is missed across a reconnect or a "dropped" frame. The
// subject prefix is learnt from the server (ready frame, event subjects), never assumed.

import type { CloudEvent, WsFrame } from './types';

export type StreamState =
  | { kind: 'connecting' }
  | { kind: 'live'; subjects: string[] }
  | { kind: 'reconnecting'; inMs: number; attempt: number; why: string }
  | { kind: 'stopped' };

export interface StreamHandlers {
  token(): string | null;
  onEvent(subject: string, event: CloudEvent): void;
  onState(state: StreamState): void;
  /** A (re)connection is live: what happened while it was down should be re-read. */
  onLive(subjects: string[], resumed: boolean | null): void;
  /** The connection failed before it was live; the app may check whether the token is still good. */
  onFailure(): void;
}

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;
/** Events a first connection asks to see from the recent past (the feed shows at most 500). */
const REPLAY = 200;

/** Checks a comma-separated list of NATS subject filters; returns a problem or null. */
export function subjectFilterProblem(value: string, eventsRoot?: string): string | null {
  if (!value.trim()) return null;
  for (const raw of value.split(',')) {
    const subject = raw.trim();
    if (!subject) return 'an empty filter between commas';
    if (eventsRoot && (!subject.startsWith(eventsRoot) || subject.length === eventsRoot.length)) {
      return `"${subject}" is not under ${eventsRoot}>`;
    }
    if (/\s/.test(subject)) return `"${subject}" contains white space`;
    const tokens = subject.split('.');
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (!t) return `"${subject}" has an empty token`;
      if (t === '>' && i !== tokens.length - 1) return `"${subject}": ">" must be the last token`;
      if (t !== '>' && t !== '*' && /[*>]/.test(t)) return `"${subject}": wildcards must be whole tokens`;
    }
  }
  return null;
}

export class EventStream {
  private ws: WebSocket | null = null;
  private timer: number | undefined;
  private attempt = 0;
  private subjects = '';
  private lastEventId: string | null = null;
  private live = false;
  private stopped = true;
  /** Bumped at every (re)connect so that late callbacks of an old socket are ignored. */
  private generation = 0;

  constructor(private readonly h: StreamHandlers) {}

  /** Connects (again) with these filters; empty means the server's default (every event). */
  start(subjects: string): void {
    this.subjects = subjects.split(',').map((s) => s.trim()).filter(Boolean).join(',');
    this.lastEventId = null; // a new filter starts live, it does not replay the old one's gap
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.close();
    this.h.onState({ kind: 'stopped' });
  }

  private close(): void {
    this.generation++;
    window.clearTimeout(this.timer);
    this.timer = undefined;
    const ws = this.ws;
    this.ws = null;
    this.live = false;
    if (ws && ws.readyState !== WebSocket.CLOSED && ws.readyState !== WebSocket.CLOSING) ws.close(1000);
  }

  private url(): string {
    const q = new URLSearchParams();
    if (this.subjects) q.set('subjects', this.subjects);
    // The first connection starts with the recent past, so the feed is not empty on load;
    // later ones resume exactly after the last event seen.
    if (this.lastEventId) q.set('after', this.lastEventId);
    else q.set('replay', String(REPLAY));
    const t = this.h.token();
    if (t) q.set('token', t);
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const qs = q.toString();
    return `${scheme}//${window.location.host}/api/v1/ws${qs ? `?${qs}` : ''}`;
  }

  private connect(): void {
    this.close();
    const gen = this.generation;
    this.h.onState({ kind: 'connecting' });
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.retry('the connection could not be opened');
      return;
    }
    this.ws = ws;
    let resumeNow = false;
    let failure: string | null = null;
    ws.addEventListener('message', (ev) => {
      if (gen !== this.generation || typeof ev.data !== 'string') return;
      let frame: WsFrame;
      try {
        frame = JSON.parse(ev.data) as WsFrame;
      } catch {
        return;
      }
      if (frame.type === 'ready') {
        this.live = true;
        this.attempt = 0;
        const subjects = Array.isArray(frame.subjects) ? frame.subjects.map(String) : [];
        this.h.onState({ kind: 'live', subjects });
        this.h.onLive(subjects, frame.resumed ?? null);
      } else if (frame.type === 'event') {
        if (frame.event && typeof frame.event.id === 'string') this.lastEventId = frame.event.id;
        this.h.onEvent(String(frame.subject ?? ''), frame.event);
      } else if (frame.type === 'dropped' || frame.type === 'error') {
        // The server closes next. "dropped": we fell behind, resume at once after what it
        // delivered; "error": its feed failed, resume after a back-off.
        if (typeof frame.resume_after === 'string' && frame.resume_after) this.lastEventId = frame.resume_after;
        resumeNow = frame.type === 'dropped';
        failure = frame.message ? String(frame.message) : null;
      }
    });
    ws.addEventListener('close', (ev) => {
      if (gen !== this.generation) return;
      const wasLive = this.live;
      this.live = false;
      this.ws = null;
      if (this.stopped) return;
      if (!wasLive) this.h.onFailure();
      if (resumeNow) {
        this.attempt = 0;
        this.retry('the server dropped a slow consumer; resuming', 0);
      } else {
        this.retry(failure ?? (wasLive ? `connection closed (${ev.code})` : 'cannot connect'));
      }
    });
  }

  private retry(why: string, delay?: number): void {
    if (this.stopped) return;
    this.attempt++;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(this.attempt - 1, 10));
    const inMs = delay ?? Math.round(base * (0.8 + Math.random() * 0.4));
    this.h.onState({ kind: 'reconnecting', inMs, attempt: this.attempt, why });
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.connect(), inMs);
  }
}
