// The bearer token: taken from the address bar's fragment (#token=…) once, then kept in
// localStorage under orch.token. The fragment is removed at once so that the token does not stay
// in the history, in bookmarks or in screenshots.

const KEY = 'orch.token';

function storage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the token lives for this page only
  }
}

let memory: string | null = null;

/** Moves a token from the fragment into storage; call once, before the first request. */
export function adoptFragmentToken(): void {
  const hash = window.location.hash.replace(/^#/, '');
  if (!hash) return;
  const params = new URLSearchParams(hash);
  const token = params.get('token');
  if (token === null) return;
  setToken(token.trim());
  params.delete('token');
  const rest = params.toString();
  const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : '');
  window.history.replaceState(window.history.state, '', url);
}

export function token(): string | null {
  return storage()?.getItem(KEY) ?? memory;
}

export function setToken(value: string): void {
  memory = value || null;
  const st = storage();
  if (!st) return;
  if (value) st.setItem(KEY, value);
  else st.removeItem(KEY);
}

export function clearToken(): void {
  setToken('');
}
