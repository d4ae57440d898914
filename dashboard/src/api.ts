// HTTP client of /api/v1: adds the bearer token, parses JSON bodies and turns every failure into
// an ApiError with a message fit to show. Health reads answer 429 and 503 with a valid body for a
// degraded or critical system; those bodies are returned, not treated as errors. Changes (POST)
// send their body as JSON, declared so (the API refuses a body of another type), with the same
// bearer token: a cross-site page can neither send the header nor read the answer.

import { token } from './auth';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** The field of the request the error names, when it names one. */
    readonly field: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Called on every 401, so the app can ask for a token. */
let unauthorized: () => void = () => {};
export function onUnauthorized(fn: () => void): void {
  unauthorized = fn;
}

interface Options {
  /** Statuses besides 2xx whose JSON body is a valid answer (e.g. 429 and 503 of health reads). */
  accept?: number[];
  signal?: AbortSignal;
}

function errorOf(status: number, body: unknown, fallback: string): ApiError {
  const err = (body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | null)?.error;
  if (err && typeof err.message === 'string') {
    const field = typeof err.field === 'string' ? ` (${err.field})` : '';
    return new ApiError(status, typeof err.code === 'string' ? err.code : 'error', err.message + field, typeof err.field === 'string' ? err.field : null);
  }
  return new ApiError(status, 'http', fallback);
}

/** GET a JSON resource under /api/v1 (path starts with "/"). */
export function getJson<T>(path: string, opts: Options = {}): Promise<{ status: number; body: T }> {
  return request<T>('GET', path, undefined, opts);
}

/**
 * POST to /api/v1 (path starts with "/"): `body` is sent as JSON (none when undefined), and the
 * answer's JSON body is returned. Failures are ApiErrors, as for reads.
 */
export function postJson<T>(path: string, body?: unknown, opts: Options = {}): Promise<{ status: number; body: T }> {
  return request<T>('POST', path, body, opts);
}

/** PUT to /api/v1 (path starts with "/") with a JSON body; as {@link postJson}. */
export function putJson<T>(path: string, body: unknown, opts: Options = {}): Promise<{ status: number; body: T }> {
  return request<T>('PUT', path, body, opts);
}

async function request<T>(method: 'GET' | 'POST' | 'PUT', path: string, payload: unknown, opts: Options): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init: RequestInit = { method, headers, signal: opts.signal ?? null, cache: 'no-store' };
  if (payload !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(payload);
  }
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'the orchestrator cannot be reached');
  }
  let body: unknown = null;
  const text = await res.text().catch(() => '');
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (res.status === 401) {
    unauthorized();
    throw errorOf(401, body, 'a valid token is needed');
  }
  if (res.ok || opts.accept?.includes(res.status)) {
    if (body === null) throw new ApiError(res.status, 'bad_body', `${method} ${path}: the answer is not JSON`);
    return { status: res.status, body: body as T };
  }
  throw errorOf(res.status, body, `${method} ${path}: HTTP ${res.status} ${res.statusText}`.trim());
}

/**
 * Follows an NDJSON stream under /api/v1 (path starts with "/"): calls `onItem` with each JSON
 * line as it arrives, until the server ends it or `signal` aborts. A line that is not JSON is
 * skipped (the stream goes on). Failures before the stream starts are ApiErrors, as for reads.
 */
export async function followNdjson(path: string, signal: AbortSignal, onItem: (item: unknown) => void): Promise<void> {
  const headers: Record<string, string> = { Accept: 'application/x-ndjson' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, { headers, signal, cache: 'no-store' });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'the orchestrator cannot be reached');
  }
  if (!res.ok || !res.body) {
    const text = await res.text().catch(() => '');
    let body: unknown = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    if (res.status === 401) unauthorized();
    throw errorOf(res.status, body, `GET ${path}: HTTP ${res.status}`);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    rest += value;
    let at = rest.indexOf('\n');
    while (at >= 0) {
      const line = rest.slice(0, at).trim();
      rest = rest.slice(at + 1);
      if (line) {
        try {
          onItem(JSON.parse(line));
        } catch {
          /* not JSON: skipped */
        }
      }
      at = rest.indexOf('\n');
    }
  }
}
