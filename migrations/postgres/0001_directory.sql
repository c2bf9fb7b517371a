-- departments, employees and their roles.
-- timestamps are rfc 3339 utc text with microseconds ("2026-11-22T08:30:00.000000Z"):
-- the same representation on sqlite and postgresql, and it sorts chronologically.
create table departments (
    department_id bigserial primary key,
    name text not null unique,
    created_at text not null,
    updated_at text not null
);

create table employees (
    employee_id bigserial primary key,
    username text not null unique,
    email text not null unique,
    display_name text not null,
    department_id bigint references departments (department_id),
    -- active | disabled; a disabled employee cannot act
    status text not null check (status in ('active', 'disabled')),
    -- 1 when the account is provisioned by oidc single sign-on (0/1: portable across drivers)
    is_oidc bigint not null default 0 check (is_oidc in (0, 1)),
    created_at text not null,
    updated_at text not null
);

create table employee_roles (
    employee_id bigint not null references employees (employee_id) on delete cascade,
    role text not null check (role in ('employee', 'technician', 'department_head', 'administrator', 'developer')),
    primary key (employee_id, role)
);

create index employees_department on employees (department_id);
