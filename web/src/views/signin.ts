// Sign-in: user name and password, then a TOTP or backup code when the account has an
// authenticator, and a new password when the given one is a one-time password. One
// "Sign in with …" link per configured OpenID provider.

import { ApiError, announce, api, tokensIssued } from '../api';
import { field, h, replace } from '../dom';
import { probe, rememberTypedUsername } from '../session';
import { type Ctx, errorBox, formError, go, submitting, title } from '../ui';

interface LoginAnswer {
  expires_in?: number;
  mfa_enrollment_required?: boolean;
  withheld_roles?: string[];
}

interface Provider {
  name: string;
  display_name?: string;
}

/// Where to go after signing in: a hash route of this application only.
function nextRoute(q: URLSearchParams): string {
  const next = q.get('next') ?? '';
  return /^\/[A-Za-z0-9/_\-?=&%.]*$/.test(next) && !next.startsWith('//') ? next : '/tickets';
}

export async function signInView(ctx: Ctx, onSignedIn: () => Promise<void>): Promise<void> {
  const next = nextRoute(ctx.query);
  const reason = ctx.query.get('reason');
  const username = h('input', { name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const code = h('input', {
    name: 'totp_code', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9 ]{6,8}', maxlength: '8',
  });
  const backup = h('input', { name: 'backup_code', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
  const newPassword = h('input', { name: 'new_password', type: 'password', autocomplete: 'new-password', minlength: '12' });
  const repeat = h('input', { name: 'new_password_repeat', type: 'password', autocomplete: 'new-password', minlength: '12' });

  const credentials = h('div', { class: 'step' }, field('User name', username), field('Password', password));
  const useBackup = h('button', { type: 'button', class: 'link-button' }, 'Use a backup code instead');
  const useTotp = h('button', { type: 'button', class: 'link-button' }, 'Use the authenticator app instead');
  const totpStep = h('div', { class: 'step', hidden: true },
    h('p', null, 'Enter the 6-digit code from your authenticator app.'),
    field('Authentication code', code), useBackup);
  const backupStep = h('div', { class: 'step', hidden: true },
    h('p', null, 'Enter one of your backup codes. Each works once.'),
    field('Backup code', backup, 'Like abcd-ef23'), useTotp);
  const changeStep = h('div', { class: 'step', hidden: true },
    h('p', null, 'This was a one-time password. Choose your own password to continue.'),
    field('New password', newPassword, 'At least 12 characters, not containing your user name.'),
    field('Repeat the new password', repeat));
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const errors = formError();
  const form = h('form', { class: 'card narrow', novalidate: true },
    errors, credentials, totpStep, backupStep, changeStep, h('div', { class: 'actions' }, submit));

  let factor: 'none' | 'totp' | 'backup' = 'none';
  let mustChange = false;
  const show = (): void => {
    credentials.hidden = factor !== 'none' || mustChange;
    totpStep.hidden = factor !== 'totp';
    backupStep.hidden = factor !== 'backup';
    changeStep.hidden = !mustChange;
    code.required = factor === 'totp';
    backup.required = factor === 'backup';
    newPassword.required = mustChange;
    repeat.required = mustChange;
    submit.textContent = mustChange ? 'Set password and sign in' : factor === 'none' ? 'Sign in' : 'Verify';
  };
  useBackup.addEventListener('click', () => { factor = 'backup'; show(); backup.focus(); });
  useTotp.addEventListener('click', () => { factor = 'totp'; show(); code.focus(); });

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void submitting(form, async (): Promise<HTMLElement | void> => {
      if (!form.reportValidity()) return;
      if (mustChange && newPassword.value !== repeat.value) {
        throw new Error('The two new passwords differ.');
      }
      const body: Record<string, string> = { username: username.value.trim(), password: password.value };
      if (factor === 'totp') body.totp_code = code.value.replace(/\s/g, '');
      if (factor === 'backup') body.backup_code = backup.value.trim();
      if (mustChange) body.new_password = newPassword.value;
      try {
        const a = await api<LoginAnswer>('/auth/login', { method: 'POST', body, noRefresh: true });
        rememberTypedUsername(body.username ?? '');
        tokensIssued(a.data.expires_in, false);
        announce({ type: 'signed-in' });
        password.value = '';
        newPassword.value = '';
        repeat.value = '';
        await probe();
        await onSignedIn();
        if (a.data.mfa_enrollment_required) {
          go('/account', { enrol: '1', withheld: (a.data.withheld_roles ?? []).join(',') });
        } else {
          go(next);
        }
      } catch (e) {
        if (e instanceof ApiError && e.kind === 'mfa-required') {
          factor = 'totp';
          show();
          return code;
        }
        if (e instanceof ApiError && e.kind === 'password-change-required') {
          mustChange = true;
          show();
          return newPassword;
        }
        if (factor !== 'none') {
          code.value = '';
          backup.value = '';
        }
        throw e;
      }
    });
  });

  const providers = h('div', { class: 'sso' });
  replace(ctx.root,
    title('Sign in'),
    reason === 'ended' ? h('p', { class: 'notice', role: 'status' }, 'Your session ended. Please sign in again.') : null,
    reason === 'signed-out' ? h('p', { class: 'notice', role: 'status' }, 'You are signed out.') : null,
    reason === 'password' ? h('p', { class: 'notice', role: 'status' }, 'Your password was changed and every session ended. Sign in with the new password.') : null,
    form, providers);
  show();
  username.focus();
  void loadProviders(providers, next);
}

async function loadProviders(into: HTMLElement, next: string): Promise<void> {
  let list: Provider[] = [];
  try {
    const a = await api<Provider[] | { providers: Provider[] }>('/auth/oidc/providers', { noRefresh: true });
    list = Array.isArray(a.data) ? a.data : a.data.providers ?? [];
  } catch (e) {
    if (e instanceof ApiError && [401, 403, 404].includes(e.status)) return; // none configured / not offered
    replace(into, errorBox(e));
    return;
  }
  if (list.length === 0) return;
  // The backend checks return_to is a local path; the hash carries the route.
  const returnTo = `/#${next}`;
  replace(into,
    h('p', { class: 'or' }, 'or'),
    h('ul', { class: 'sso-list' }, list.map((p) => h('li', null,
      h('a', {
        class: 'button sso-button',
        href: `/auth/oidc/login?${new URLSearchParams({ provider: p.name, return_to: returnTo }).toString()}`,
      }, `Sign in with ${p.display_name || p.name}`)))));
}
