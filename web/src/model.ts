// The backend's shapes (see GET /api/openapi.json).

export interface Ticket {
  id: string;
  title: string;
  description: string;
  status: string;
  priority: string;
  department_id: number;
  reporter_id: number;
  assignee_id: number | null;
  approved_by: number | null;
  approved_at: string | null;
  version: number;
  created_at: string;
  updated_at: string;
}

export interface TicketPage {
  items: Ticket[];
  next_cursor?: string | null;
}

export interface Comment {
  id: number;
  ticket_id: string;
  author_id: number;
  body: string;
  created_at: string;
}

export interface HistoryEntry {
  sequence: number;
  action: string;
  actor_id: number;
  snapshot: string;
  prev_hash: string;
  hash: string;
  created_at: string;
}

export interface Employee {
  id: number;
  username: string;
  email: string;
  display_name: string;
  department_id: number | null;
  roles: string[];
  status: string;
  is_oidc: boolean;
  session_timeout_seconds: number | null;
  created_at: string;
  updated_at: string;
}

export interface Department {
  id: number;
  name: string;
  created_at: string;
  updated_at: string;
}

export interface Session {
  session_id: string;
  employee_id: number;
  auth_method: string;
  mfa: boolean;
  created_at: string;
  expires_at: string;
  absolute_expires_at: string;
  revoked_at: string | null;
  revoked_reason: string | null;
  source_ip: string | null;
  user_agent: string | null;
  current?: boolean;
}

export type AuditEvent = Record<string, unknown>;

export interface AuditPage {
  items: AuditEvent[];
  next_cursor?: string | null;
}

export const STATUSES = ['open', 'in_progress', 'resolved', 'closed', 'reopened'];
export const PRIORITIES = ['low', 'medium', 'high', 'critical'];

/// The workflow (backend `TicketStatus::can_become`).
export const NEXT_STATUS: Record<string, string[]> = {
  open: ['in_progress'],
  in_progress: ['resolved'],
  resolved: ['closed', 'reopened'],
  closed: ['reopened'],
  reopened: ['in_progress'],
};

export const etagOf = (t: Ticket): string => `"${t.version}"`;
