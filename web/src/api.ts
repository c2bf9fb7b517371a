// Talking to the backend through the proxy.
//
// Credentials: the session is the backend's `__Host-` cookies (access and refresh are
// HttpOnly; the page never sees them). Nothing is kept in localStorage, sessionStorage
// or IndexedDB. Unsafe requests carry the double-submit CSRF token the proxy checks:
// the readable `__Host-portcullis-csrf` cookie echoed in `X-CSRF-Token` (the browser
// adds `Origin` and `Sec-Fetch-Site: same-origin` itself).
//
// Refresh: refresh tokens rotate on every use and a second use of a rotated one ends
// the session. Two tabs that find their access token expired at the same moment would
// both send the same refresh cookie, and the slower one would end the session for
// both. So every refresh, from any tab, runs inside one Web Lock
// (`navigator.locks`, shared by all tabs of this origin); a tab that gets the lock
// after another tab refreshed sees that the CSRF cookie (rotated with every refresh)
// changed and only retries its request.

export const CSRF_COOKIE = '__Host-portcullis-csrf';
export const CSRF_HEADER = 'X-CSRF-Token';
const REFRESH_LOCK = 'portcullis-token-refresh';

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  request_id?: string;
  decision_id?: string;
}

export class ApiError extends Error {
  readonly status: number;
  readonly problem: Problem;
  constructor(status: number, problem: Problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
  /// The problem's slug: `urn:portcullis:problem:<kind>`.
  get kind(): string {
    return (this.problem.type ?? '').replace(/^urn:portcullis:problem:/, '');
  }
}

export interface Options {
  method?: string;
  body?: unknown;
  query?: Record<string, string | number | null | undefined>;
  ifMatch?: string;
  /// No refresh-and-retry on 401 (sign-in, refresh, the session probe).
  noRefresh?: boolean;
  /// Return the body as a Blob (CSV export).
  blob?: boolean;
  /// Internal: the retry after a refresh.
  retry?: boolean;
}

export interface Answer<T> {
  status: number;
  data: T;
  etag: string | null;
}

/// The value of a cookie the page may read (only the CSRF token is readable).
export function readCookie(name: string): string | null {
  for (const part of document.cookie.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

export function csrfToken(): string | null {
  return readCookie(CSRF_COOKIE);
}

const safe = new Set(['GET', 'HEAD', 'OPTIONS']);

function url(path: string, query?: Options['query']): string {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

async function problemOf(res: Response): Promise<Problem> {
  const type = res.headers.get('content-type') ?? '';
  if (type.includes('json')) {
    try {
      return (await res.json()) as Problem;
    } catch {
      /* fall through */
    }
  }
  return { status: res.status, title: res.statusText || `HTTP ${res.status}` };
}

// ------------------------------------------------------------------ session events

type Listener = () => void;
const endedListeners: Listener[] = [];

/// Called when the session is gone (refresh refused, signed out in another tab).
export function onSessionEnded(l: Listener): void {
  endedListeners.push(l);
}

function sessionEnded(): void {
  stopRefreshTimer();
  for (const l of endedListeners) l();
}

// Other tabs of this origin hear about refreshes (to reschedule theirs) and sign-outs.
// Messages carry no credential: only what happened and when the access token expires.
type TabMessage = { type: 'refreshed'; expiresAt: number } | { type: 'signed-out' } | { type: 'signed-in' };
const channel: BroadcastChannel | null =
  typeof BroadcastChannel === 'function' ? new BroadcastChannel('portcullis-session') : null;
const signedInListeners: Listener[] = [];
export function onSignedInElsewhere(l: Listener): void {
  signedInListeners.push(l);
}
channel?.addEventListener('message', (e: MessageEvent<TabMessage>) => {
  const m = e.data;
  if (m?.type === 'refreshed') scheduleRefreshAt(m.expiresAt);
  else if (m?.type === 'signed-out') sessionEnded();
  else if (m?.type === 'signed-in') for (const l of signedInListeners) l();
});

export function announce(m: TabMessage): void {
  channel?.postMessage(m);
}

// ------------------------------------------------------------------ refresh

let refreshTimer: number | undefined;

function stopRefreshTimer(): void {
  if (refreshTimer !== undefined) window.clearTimeout(refreshTimer);
  refreshTimer = undefined;
}

/// Refreshes ahead of expiry (a minute before, or at 80 % of short lifetimes), so
/// requests do not meet an expired access token.
function scheduleRefreshAt(expiresAt: number): void {
  stopRefreshTimer();
  const left = expiresAt - Date.now();
  const lead = Math.min(60_000, left * 0.2);
  const wait = Math.max(1_000, left - lead);
  refreshTimer = window.setTimeout(() => {
    refreshTimer = undefined;
    void refreshSession(csrfToken()).then((ok) => {
      if (!ok) sessionEnded();
    });
  }, wait);
}

/// Starts the refresh schedule from a token answer (`expires_in` seconds).
export function tokensIssued(expiresIn: number | undefined, tellOthers: boolean): void {
  if (!expiresIn || expiresIn <= 0) return;
  const expiresAt = Date.now() + expiresIn * 1000;
  scheduleRefreshAt(expiresAt);
  if (tellOthers) announce({ type: 'refreshed', expiresAt });
}

let inflight: Promise<boolean> | null = null;

/// Gets a new access token unless another tab (or request) already did since the
/// CSRF cookie had the value `seen`. True when a fresh token is in the cookie jar.
export function refreshSession(seen: string | null): Promise<boolean> {
  const locks = navigator.locks;
  if (!locks) {
    // No Web Locks: at least one refresh at a time in this tab.
    inflight ??= doRefresh().finally(() => {
      inflight = null;
    });
    return inflight;
  }
  // The callback's promise is awaited while the lock is held; request() resolves with its value.
  return locks.request(REFRESH_LOCK, { mode: 'exclusive' }, async (): Promise<boolean> => {
    const now = csrfToken();
    if (now === null) return false; // signed out (here or in another tab)
    if (seen !== null && now !== seen) return true; // someone refreshed meanwhile
    return doRefresh();
  }) as unknown as Promise<boolean>;
}

async function doRefresh(): Promise<boolean> {
  const token = csrfToken();
  if (token === null) return false;
  let res: Response;
  try {
    res = await fetch('/auth/refresh', {
      method: 'POST',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { [CSRF_HEADER]: token, Accept: 'application/json' },
    });
  } catch {
    return false;
  }
  if (!res.ok) return false;
  const body = (await res.json().catch(() => ({}))) as { expires_in?: number };
  tokensIssued(body.expires_in, true);
  return true;
}

// ------------------------------------------------------------------ requests

/// One API call: JSON in and out, problem+json errors as ApiError, one refresh and
/// retry on 401.
export async function api<T = unknown>(path: string, opts: Options = {}): Promise<Answer<T>> {
  const method = (opts.method ?? 'GET').toUpperCase();
  const seen = csrfToken();
  const headers: Record<string, string> = {
    Accept: opts.blob ? 'text/csv, application/problem+json' : 'application/json, application/problem+json',
  };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (!safe.has(method) && seen !== null) headers[CSRF_HEADER] = seen;
  if (opts.ifMatch) headers['If-Match'] = opts.ifMatch;
  let res: Response;
  try {
    res = await fetch(url(path, opts.query), {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      body: opts.body === undefined ? null : JSON.stringify(opts.body),
    });
  } catch {
    throw new ApiError(0, { title: 'Network error', detail: 'The server could not be reached. Check the connection and try again.' });
  }
  if (res.status === 401 && seen !== null && !opts.noRefresh) {
    if (await refreshSession(seen)) return api<T>(path, { ...opts, noRefresh: true, retry: true });
    sessionEnded();
  } else if (res.status === 401 && opts.retry) {
    sessionEnded(); // refreshed, and still refused: the session is gone
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  const etag = res.headers.get('etag');
  if (res.status === 204) return { status: res.status, data: null as T, etag };
  if (opts.blob) return { status: res.status, data: (await res.blob()) as T, etag };
  const type = res.headers.get('content-type') ?? '';
  const data = type.includes('json') ? ((await res.json()) as T) : ((await res.text()) as T);
  return { status: res.status, data, etag };
}

export const get = <T>(path: string, query?: Options['query']): Promise<T> =>
  api<T>(path, { query }).then((a) => a.data);

export const post = <T>(path: string, body?: unknown, extra: Options = {}): Promise<T> =>
  api<T>(path, { ...extra, method: 'POST', body }).then((a) => a.data);

/// Ends the session at the backend and tells the other tabs.
export async function signOut(): Promise<void> {
  stopRefreshTimer();
  try {
    await api('/auth/logout', { method: 'POST', noRefresh: true });
  } catch {
    /* the cookies are cleared by the answer; a failure still leaves this tab signed out */
  }
  announce({ type: 'signed-out' });
}

/// A short, user-facing description of an error.
export function describe(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 429) return 'Too many requests. Wait a moment and try again.';
    if (e.status === 403 && !e.problem.detail) return 'You are not allowed to do that.';
    return e.message;
  }
  if (e instanceof Error) return e.message;
  return String(e);
}
