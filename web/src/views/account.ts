// The user's own account: who they are, their password, their authenticator (TOTP
// enrolment with the QR code, then the backup codes) and their sessions.

import { ApiError, announce, api, get, post } from '../api';
import { field, h, replace, time } from '../dom';
import type { Session } from '../model';
import { me, probe, setAnonymous } from '../session';
import { type Ctx, confirmButton, formError, go, say, section, submitting, table, title } from '../ui';

interface Enrolment {
  secret: string;
  otpauth_uri: string;
  qr_svg?: string | null;
}

export async function accountView(ctx: Ctx): Promise<void> {
  const m = me();
  const withheld = (ctx.query.get('withheld') ?? '').split(',').filter(Boolean);
  const profile = h('section', { class: 'card', 'aria-labelledby': 'profile-h' },
    h('h2', { id: 'profile-h' }, 'Profile'),
    m.known
      ? h('dl', { class: 'facts' },
        h('dt', null, 'Name'), h('dd', null, m.display_name ?? '—'),
        h('dt', null, 'User name'), h('dd', null, m.username ?? '—'),
        h('dt', null, 'E-mail'), h('dd', null, m.email ?? '—'),
        h('dt', null, 'Roles'), h('dd', null, m.roles.length > 0 ? m.roles.join(', ') : 'none'),
        m.withheld_roles.length > 0 ? [h('dt', null, 'Withheld'), h('dd', null, `${m.withheld_roles.join(', ')} (sign in with a second factor to use them)`)] : null,
        h('dt', null, 'Signed in with'), h('dd', null, `${m.oidc_provider ? `single sign-on (${m.oidc_provider})` : m.auth_method ?? '—'}${m.mfa ? ' and a second factor' : ''}`),
        h('dt', null, 'Session ends'), h('dd', null, time(m.session_expires_at)))
      : h('p', { class: 'muted' }, 'This server does not tell the page who is signed in.'));
  const mfa = h('section', { class: 'card', 'aria-labelledby': 'mfa-h' });
  const password = h('section', { class: 'card', 'aria-labelledby': 'password-h' });
  replace(ctx.root, title('Account and security'),
    ctx.query.get('enrol') ? h('div', { class: 'notice', role: 'status' },
      h('p', null, 'Your role needs a second factor. Set up an authenticator app below, then sign in again with a code.'),
      withheld.length > 0 ? h('p', null, `Held back until then: ${withheld.join(', ')}.`) : null) : null,
    profile, mfa, password,
    h('p', null, h('a', { href: '#/account/sessions' }, 'Your sessions →')));
  renderMfa(mfa);
  renderPassword(password);
}

function renderMfa(into: HTMLElement): void {
  const m = me();
  const head = h('h2', { id: 'mfa-h' }, 'Two-step sign-in');
  if (m.known && m.mfa_enrolled) {
    replace(into, head, h('p', null, 'An authenticator app is set up for your account. If you lose it, use a backup code, and ask an administrator to reset it.'));
    return;
  }
  const sso = m.auth_method === 'oidc' || Boolean(m.oidc_provider);
  const pw = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: !sso });
  const form = h('form', { 'aria-label': 'Set up an authenticator' }, formError(),
    h('p', null, 'Protect your account with a code from an authenticator app (any TOTP app) in addition to your password.'),
    sso ? null : field('Current password', pw, 'Needed so that nobody with your open session can bind their own device.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Set up an authenticator app')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void submitting(form, async () => {
      if (!form.reportValidity()) return;
      const e = await post<Enrolment>('/auth/mfa/totp/enroll', sso ? {} : { password: pw.value });
      pw.value = '';
      showEnrolment(into, head, e);
    });
  });
  replace(into, head, form);
}

/// The QR code is the SVG the backend drew from the otpauth URI, shown as an image
/// (a `data:` URL, allowed by `img-src`): an image cannot run script, and nothing is
/// parsed as markup in the page.
function qrImage(e: Enrolment): HTMLElement | null {
  if (!e.qr_svg) return null;
  const img = h('img', {
    class: 'qr',
    alt: 'QR code for your authenticator app',
    width: '220',
    height: '220',
  });
  img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(e.qr_svg)}`;
  return img;
}

function showEnrolment(into: HTMLElement, head: HTMLElement, e: Enrolment): void {
  const code = h('input', { name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', required: true, pattern: '[0-9 ]{6,8}', maxlength: '8' });
  const form = h('form', { 'aria-label': 'Confirm the authenticator' }, formError(),
    h('ol', { class: 'steps' },
      h('li', null, 'Scan this code with your authenticator app:', h('div', { class: 'qr-box' }, qrImage(e))),
      h('li', null, 'Or type this key into the app: ', h('code', { class: 'secret' }, e.secret.replace(/(.{4})/g, '$1 ').trim())),
      h('li', null, 'Enter the code the app shows to confirm:')),
    field('Code from the app', code),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Confirm')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void submitting(form, async () => {
      if (!form.reportValidity()) return;
      const r = await post<{ backup_codes: string[] }>('/auth/mfa/totp/confirm', { code: code.value.replace(/\s/g, '') });
      showBackupCodes(into, head, r.backup_codes);
    });
  });
  replace(into, head, form);
  code.focus();
}

function showBackupCodes(into: HTMLElement, head: HTMLElement, codes: string[]): void {
  const download = (): void => {
    const blob = new Blob([`Portcullis backup codes for ${me().username ?? 'your account'} (each works once)\n\n${codes.join('\n')}\n`], { type: 'text/plain' });
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: 'portcullis-backup-codes.txt', hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };
  const box = h('div', { class: 'backup', role: 'status', tabindex: '-1' },
    h('h3', null, 'Your backup codes'),
    h('p', null, 'Each code signs you in once when you do not have your device. Keep them somewhere safe: they are shown only now.'),
    h('ul', { class: 'codes' }, codes.map((c) => h('li', null, h('code', null, c)))),
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: download }, 'Download as a text file'),
      h('button', {
        type: 'button', class: 'primary', onclick: async () => {
          await probe().catch(() => undefined);
          if (me().withheld_roles.length > 0) {
            say('Sign in again with a code to get every role.');
          }
          replace(into, head, h('p', null, 'An authenticator app is set up for your account.'));
        },
      }, 'I have saved them')));
  replace(into, head, h('p', { class: 'ok' }, 'The authenticator is set up. From now on you sign in with a code.'), box);
  box.focus();
}

function renderPassword(into: HTMLElement): void {
  const m = me();
  const head = h('h2', { id: 'password-h' }, 'Password');
  if (m.known && (m.auth_method === 'oidc' || m.oidc_provider)) {
    replace(into, head, h('p', null, 'You sign in through your organisation; change the password there.'));
    return;
  }
  const current = h('input', { name: 'current_password', type: 'password', autocomplete: 'current-password', required: true });
  const next = h('input', { name: 'new_password', type: 'password', autocomplete: 'new-password', required: true, minlength: '12' });
  const repeat = h('input', { name: 'new_password_repeat', type: 'password', autocomplete: 'new-password', required: true, minlength: '12' });
  const form = h('form', { 'aria-label': 'Change password' }, formError(),
    field('Current password', current),
    field('New password', next, 'At least 12 characters, not containing your user name. Every session ends, this one too.'),
    field('Repeat the new password', repeat),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Change password')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void submitting(form, async () => {
      if (!form.reportValidity()) return;
      if (next.value !== repeat.value) throw new Error('The two new passwords differ.');
      await api('/auth/password', { method: 'POST', body: { current_password: current.value, new_password: next.value } });
      // Every session ended, this one too: the answer cleared the cookies.
      announce({ type: 'signed-out' });
      setAnonymous();
      go('/signin', { reason: 'password' });
    });
  });
  replace(into, head, form);
}

export async function mySessionsView(ctx: Ctx): Promise<void> {
  const list = h('div');
  replace(ctx.root, title('Your sessions'),
    h('p', null, 'Every place you are signed in. End any you do not recognise.'), list);
  const load = (): Promise<void> => section(list, () => get<Session[]>('/auth/sessions'), (sessions) => table<Session>('Your sessions', [
    ['Started', (s) => time(s.created_at)],
    ['Method', (s) => `${s.auth_method}${s.mfa ? ' + second factor' : ''}`],
    ['From', (s) => s.source_ip ?? '—'],
    ['Browser', (s) => h('span', { class: 'ua' }, s.user_agent ?? '—')],
    ['Ends', (s) => time(s.expires_at)],
    ['', (s) => s.current ? h('span', { class: 'badge' }, 'This session')
      : confirmButton('End', 'End this session?', async () => {
        await api(`/auth/sessions/${encodeURIComponent(s.session_id)}`, { method: 'DELETE' });
        say('Session ended.');
        await load();
      })],
  ], sessions, 'No active session.'), 'Loading your sessions…');
  await load().catch((e: unknown) => {
    if (e instanceof ApiError) say(e.message, 'error');
  });
}
