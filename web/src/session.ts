// Who is signed in. The access token is HttpOnly, so the page asks the backend
// (`GET /auth/session`, a public route that answers anonymous callers too). When a
// backend without that endpoint answers, the page still works: it learns whether it
// is signed in from a ticket query and shows every area, leaving refusals to the
// server (`known: false`).

import { ApiError, api, csrfToken, refreshSession } from './api';

export type Role = 'employee' | 'technician' | 'department_head' | 'administrator' | 'developer';
export const ROLES: Role[] = ['employee', 'technician', 'department_head', 'administrator', 'developer'];

export interface Me {
  authenticated: boolean;
  /// False when the backend could not say who this is (no `/auth/session`).
  known: boolean;
  employee_id?: number;
  username?: string;
  display_name?: string;
  email?: string;
  department_id?: number | null;
  roles: string[];
  withheld_roles: string[];
  auth_method?: string;
  oidc_provider?: string | null;
  mfa?: boolean;
  mfa_enrolled?: boolean;
  session_id?: string;
  session_expires_at?: string;
}

const anonymous: Me = { authenticated: false, known: true, roles: [], withheld_roles: [] };

let current: Me = anonymous;
/// The name typed at sign-in, kept in memory only (for a backend without `/auth/session`).
let typedUsername: string | undefined;

export function me(): Me {
  return current;
}

export function setAnonymous(): void {
  current = anonymous;
}

export function rememberTypedUsername(name: string): void {
  typedUsername = name;
}

type SessionAnswer = Partial<Me> & { authenticated?: boolean };

async function ask(): Promise<Me | null> {
  try {
    const a = await api<SessionAnswer>('/auth/session', { noRefresh: true });
    const d = a.data ?? {};
    if (!d.authenticated) return anonymous;
    return {
      ...d,
      authenticated: true,
      known: true,
      roles: d.roles ?? [],
      withheld_roles: d.withheld_roles ?? [],
    };
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return anonymous;
    if (e instanceof ApiError && (e.status === 403 || e.status === 404)) return null; // no such endpoint
    throw e;
  }
}

/// Finds out who is signed in; refreshes once when only the refresh cookie is left.
export async function probe(): Promise<Me> {
  let found = await ask();
  if (found === null) return fallbackProbe();
  if (!found.authenticated && csrfToken() !== null) {
    // The access cookie expired (its Max-Age is the token's lifetime), the refresh
    // cookie may still be there: the CSRF cookie lives as long as it does.
    if (await refreshSession(csrfToken())) found = (await ask()) ?? anonymous;
  }
  current = found;
  return current;
}

async function fallbackProbe(): Promise<Me> {
  try {
    await api('/api/tickets', { query: { limit: 1 } });
    current = { authenticated: true, known: false, roles: [], withheld_roles: [], username: typedUsername };
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) current = anonymous;
    else throw e;
  }
  return current;
}

export function hasRole(...roles: string[]): boolean {
  if (!current.known) return true; // unknown: show it, the server decides
  return roles.some((r) => current.roles.includes(r));
}

export const isAdmin = (): boolean => hasRole('administrator');
export const isManager = (): boolean => hasRole('administrator', 'department_head');
/// Administrators and developers: the monitoring pages.
export const isOperator = (): boolean => hasRole('administrator', 'developer');

export function displayName(): string {
  return current.display_name || current.username || 'Signed in';
}
