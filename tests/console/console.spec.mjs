// The web console in a real browser: Debian's chromium driven by Playwright (playwright-core,
// no browser download). Run by tests/console.rs, which starts the hub, imports a flow with
// rejected rows, makes a dead letter and passes what it knows in the environment. Exits 0 only
// when every check passes; each failure is printed with what was seen.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`console.spec.mjs: ${k} is not set (run it through tests/console.rs)`);
  return v;
};
const HUB = env('HUB_URL');
const ADMIN = env('ADMIN_TOKEN');
const KEY_A = env('KEY_A');
const ENTITY_A = env('ENTITY_A');
const ENTITY_B = env('ENTITY_B');
const FLOW_A = env('FLOW_A');
const FLOW_B = env('FLOW_B');
const FLOW_B_FILE = env('FLOW_B_FILE');
const REJECTED_IUD = env('REJECTED_IUD');
const REJECTED_CODE = env('REJECTED_CODE');
const DEAD_KEY = env('DEAD_KEY');
const HELD_KEY = env('HELD_KEY');
const REPORT_A = env('REPORT_A');
const REPORT_B = env('REPORT_B');
const SHOTS = env('SHOTS_DIR');
const SNODO = env('SNODO_BIN');
const HOME = env('HUB_HOME');
const PAID_IUD = env('PAID_IUD');
const ACTIVE_IUD = env('ACTIVE_IUD');
const ACTIVE_PAYER = env('ACTIVE_PAYER');
const ACTIVE_NOTICE = env('ACTIVE_NOTICE');
mkdirSync(SHOTS, { recursive: true });

const step = (s) => console.log(`console.spec: ${s}`);
const shot = async (page, name) => {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
  step(`screenshot ${name}.png`);
};

// ---- security, over plain HTTP ----
step('security headers, cookie flags, CSRF');
{
  const login = await fetch(`${HUB}/console/login`);
  assert.equal(login.status, 200);
  const csp = login.headers.get('content-security-policy') || '';
  assert.match(csp, /default-src 'none'/, `CSP on the sign-in page: ${csp}`);
  assert.match(csp, /script-src 'self'/);
  assert.equal((await fetch(`${HUB}/console/api/me`)).status, 401, 'no session: 401');
  const bad = await fetch(`${HUB}/console/login`, {
    method: 'POST', redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=not-a-key',
  });
  assert.equal(bad.status, 401, 'a wrong token is refused');
  const foreign = await fetch(`${HUB}/console/login`, {
    method: 'POST', redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'cross-site' },
    body: `token=${encodeURIComponent(ADMIN)}`,
  });
  assert.equal(foreign.status, 403, 'a sign-in posted from another site is refused');
  assert.equal(foreign.headers.get('set-cookie'), null);
  assert.equal(bad.headers.get('set-cookie'), null, 'and gets no cookie');
  const ok = await fetch(`${HUB}/console/login`, {
    method: 'POST', redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${encodeURIComponent(ADMIN)}`,
  });
  assert.equal(ok.status, 303, 'signed in: redirected');
  const cookie = ok.headers.get('set-cookie') || '';
  assert.match(cookie, /^snodo_console=[0-9a-f]{64};/, cookie);
  assert.match(cookie, /HttpOnly/, 'HttpOnly');
  assert.match(cookie, /SameSite=Strict/, 'SameSite=Strict');
  assert.match(cookie, /Path=\/console/, 'Path=/console');
  assert.doesNotMatch(cookie, /Secure/, 'Secure only under TLS (this hub is plain HTTP on loopback)');
  const jar = cookie.split(';')[0];
  const me = await (await fetch(`${HUB}/console/api/me`, { headers: { cookie: jar } })).json();
  assert.equal(me.role, 'operator');
  assert.ok(me.csrf && me.csrf.length === 64);
  const api = await fetch(`${HUB}/console/api/me`, { headers: { cookie: jar } });
  assert.match(api.headers.get('content-security-policy') || '', /default-src 'none'/, 'CSP on the API too');
  for (const [what, headers] of [['no token', {}], ['a wrong token', { 'x-csrf-token': 'f'.repeat(64) }]]) {
    const r = await fetch(`${HUB}/console/api/dlq/replay`, { method: 'POST', headers: { cookie: jar, ...headers } });
    assert.equal(r.status, 403, `a state-changing request with ${what} is refused`);
  }
  const r = await fetch(`${HUB}/console/api/receipts/1/release`, { method: 'POST', headers: { cookie: jar } });
  assert.equal(r.status, 403, 'release without the CSRF token is refused');
  const none = await fetch(`${HUB}/console/api/dlq/replay?entity=${ENTITY_B}`, { method: 'POST', headers: { cookie: jar, 'x-csrf-token': me.csrf } });
  assert.equal(none.status, 200, 'with the token: replay all of an entity');
  assert.deepEqual(await none.json(), { replayed: 0 }, `${ENTITY_B} has no dead letters`);
  const out = await fetch(`${HUB}/console/api/logout`, { method: 'POST', headers: { cookie: jar, 'x-csrf-token': me.csrf } });
  assert.equal(out.status, 200);
  assert.equal((await fetch(`${HUB}/console/api/me`, { headers: { cookie: jar } })).status, 401, 'signed out: the session is gone');
}

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
let failed = null;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'it-IT' });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

  const signIn = async (token) => {
    await page.goto(`${HUB}/console`);
    await page.waitForURL(/\/console\/login$/);
    await page.getByLabel(/Chiave API/).fill(token);
    await page.getByRole('button', { name: /Accedi/ }).click();
    await page.waitForURL(/\/console$/);
    await page.getByRole('heading', { name: 'Panoramica' }).waitFor();
  };

  // ---- the operator ----
  step('operator: sign in, overview');
  await page.goto(`${HUB}/console/login`);
  await shot(page, '00-login');
  await signIn(ADMIN);
  await page.locator('table.pipelines').waitFor();
  assert.ok(await page.getByRole('cell', { name: 'padova-dovuti-in' }).count() > 0, 'the overview lists the pipelines');
  await page.locator('.chart svg').first().waitFor();
  const ov = await (await page.request.get(`${HUB}/console/api/overview`)).json();
  assert.equal(ov.flowsToday.IMPORT_ESEGUITO, 2, `both flows imported today: ${JSON.stringify(ov.flowsToday)}`);
  assert.equal(ov.receipts.dead, 1, 'one dead letter');
  assert.equal(ov.receipts.held, 1, 'one held receipt');
  assert.equal(ov.receipts.rowsRejected, 2, 'two rows rejected');
  assert.ok(ov.soap.ok >= 1, 'the node\'s answers are counted');
  const pushRow = ov.pipelines.find((p) => p.name === 'padova-receipts-push');
  assert.match(pushRow.lastError || '', /400/, 'the push pipeline shows its last error');
  await shot(page, '01-overview');

  step('operator: keyboard only');
  await page.locator('body').focus();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'skip', 'the first Tab reaches the skip link');
  let reached = false;
  for (let i = 0; i < 12 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement.textContent === 'Flussi');
  }
  assert.ok(reached, 'Tab reaches the navigation');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Flussi', exact: true }).waitFor();
  await page.goto(`${HUB}/console#/overview`);

  step('operator: pipelines as a picture');
  await page.getByRole('link', { name: 'Pipeline', exact: true }).click();
  await page.locator('article.pipe').first().waitFor();
  const pic = page.locator('article.pipe', { hasText: 'padova-dovuti-in' });
  for (const s of ['dir', 'mypay-import', 'registry']) assert.ok(await pic.getByText(s, { exact: true }).count() > 0, `the import pipeline shows ${s}`);
  await shot(page, '02-pipelines');

  step('operator: a rejected row of the imported flow');
  await page.getByRole('link', { name: 'Flussi', exact: true }).click();
  await page.locator('table.flows').waitFor();
  await page.locator(`a[href="#/flows/${FLOW_A}"]`).first().click();
  const row = page.locator('tr.rejected-row', { hasText: REJECTED_IUD });
  await row.waitFor();
  assert.ok((await row.textContent()).includes(REJECTED_CODE), `the rejected row carries ${REJECTED_CODE}: ${await row.textContent()}`);
  const download = page.locator('a[download]', { hasText: '_SCARTI.zip' });
  assert.equal(await download.count(), 1, 'the rejected-rows file can be downloaded');
  const zip = await page.request.get(`${HUB}${await download.getAttribute('href')}`);
  assert.equal(zip.status(), 200);
  assert.equal((await zip.body()).subarray(0, 2).toString(), 'PK', 'a zip');
  await shot(page, '03-flow');

  step('operator: positions search and detail');
  await page.goto(`${HUB}/console#/positions`);
  await page.getByLabel('Cerca per').selectOption('iud');
  await page.locator('#search-value').fill(PAID_IUD);
  await page.getByRole('button', { name: 'Cerca' }).click();
  await page.locator('table.positions').waitFor();
  await page.getByRole('link', { name: PAID_IUD, exact: true }).click();
  await page.getByRole('heading', { name: 'Storico' }).waitFor();
  await shot(page, '04-position');
  await page.goto(`${HUB}/console#/positions?by=iud&v=${ACTIVE_IUD}`);
  await page.getByRole('link', { name: ACTIVE_IUD, exact: true }).click();
  const pdfLink = page.getByRole('link', { name: /Avviso di pagamento/ });
  await pdfLink.waitFor();
  const pdf = await page.request.get(`${HUB}${await pdfLink.getAttribute('href')}`);
  assert.equal(pdf.status(), 200);
  assert.equal(pdf.headers()['content-type'], 'application/pdf');
  assert.equal((await pdf.body()).subarray(0, 5).toString(), '%PDF-', 'the position\'s payment notice');
  await page.goto(`${HUB}/console#/positions?by=fiscalCode&v=${ACTIVE_PAYER}`);
  await page.getByRole('link', { name: ACTIVE_IUD, exact: true }).waitFor();

  step('operator: receipts');
  await page.goto(`${HUB}/console#/receipts`);
  await page.getByRole('heading', { name: /Trattenute/ }).waitFor();
  const held = page.locator(`tr.held[data-id="${HELD_KEY}"]`);
  await held.waitFor();
  assert.match(await held.textContent(), /unknown_notice/, 'the held receipt shows its reason');
  assert.match(await held.textContent(), /padova-receipts-export/, 'and the pipeline holding it');
  await shot(page, '05-receipts');
  page.once('dialog', (d) => d.accept());
  await held.getByRole('button', { name: 'Rilascia' }).click();
  await page.getByText('Fatto: Rilascia').waitFor();
  const after = await (await page.request.get(`${HUB}/console/api/receipts?entity=${ENTITY_A}`)).json();
  assert.ok(!after.held.some((r) => r.receipt_id === HELD_KEY), 'released: no longer held');
  assert.ok(after.flagged.some((r) => r.receipt_id === HELD_KEY && r.review === 'released'), 'flagged, released');
  await page.getByRole('link', { name: DEAD_KEY }).first().click();
  await page.locator('pre.xml').waitFor();
  assert.match(await page.locator('pre.xml').textContent(), /paSendRTV2Req|receiptId/, 'the raw XML');
  await shot(page, '06-receipt-xml');

  step('operator: replay a dead letter and see it delivered');
  await page.goto(`${HUB}/console#/deliveries?status=dead`);
  const dead = page.locator('tr.delivery', { hasText: DEAD_KEY });
  await dead.waitFor();
  assert.match(await dead.textContent(), /400/, 'the dead letter shows its error');
  await shot(page, '07-dead-letters');
  await dead.getByRole('button', { name: 'Riprova' }).click();
  await page.locator('#delivery-status', { hasText: 'Rimesse in coda: 1' }).waitFor();
  let delivered = false;
  await page.goto(`${HUB}/console#/deliveries?status=delivered`);
  for (let i = 0; i < 30 && !delivered; i++) {
    await page.reload();
    await page.locator('table.deliveries, p.empty').first().waitFor();
    delivered = await page.locator('tr.delivery', { hasText: DEAD_KEY }).count() > 0;
    if (!delivered) await page.waitForTimeout(500);
  }
  assert.ok(delivered, 'the replayed dead letter is delivered');
  await shot(page, '08-delivered');

  step('operator: live events while snodo sim pays');
  await page.goto(`${HUB}/console#/events`);
  await page.locator('#live').waitFor();
  // The latest events come first (the flow's, the dead letter's); then the live ones.
  await page.locator('li.event[data-kind="delivery.dead"]').first().waitFor();
  const paid = page.locator('li.event[data-kind="position.paid"]', { hasText: ACTIVE_IUD });
  assert.equal(await paid.count(), 0, `${ACTIVE_IUD} is not paid yet`);
  const sim = spawn(SNODO, ['sim', '-c', 'config.toml', '--from-config', '--url', HUB], { cwd: HOME, stdio: ['ignore', 'pipe', 'pipe'] });
  let simOut = '';
  sim.stdout.on('data', (d) => { simOut += d; });
  sim.stderr.on('data', (d) => { simOut += d; });
  const simDone = new Promise((res) => sim.on('exit', (code) => res(code)));
  // The page was not reloaded: these arrive over the open stream while the sim pays.
  await paid.first().waitFor({ timeout: 30000 });
  assert.equal(await simDone, 0, `snodo sim: ${simOut}`);
  for (const kind of ['payment.activated', 'receipt.stored']) {
    await page.locator(`li.event[data-kind="${kind}"]`, { hasText: ACTIVE_NOTICE }).first().waitFor();
  }
  await shot(page, '09-events');
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, button')]
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim() && e.type !== 'hidden')
    .map((e) => e.outerHTML));
  assert.deepEqual(unlabelled, [], 'every control has a label');
  await page.goto(`${HUB}/console#/events?kind=delivery`);
  await page.locator('li.event').first().waitFor();
  const kinds = await page.locator('li.event').evaluateAll((els) => els.map((e) => e.dataset.kind));
  assert.ok(kinds.length > 0 && kinds.every((k) => k.startsWith('delivery.')), `filtered by kind: ${kinds}`);

  step('operator: one entity picked');
  await page.goto(`${HUB}/console#/flows`);
  await page.locator('table.flows').waitFor();
  assert.ok(await page.getByText(FLOW_B_FILE).count() > 0, 'every entity\'s flows for the operator');
  await page.locator('#entity-select').selectOption(ENTITY_A);
  await page.waitForFunction((f) => !document.body.textContent.includes(f), FLOW_B_FILE);
  await page.locator('#entity-select').selectOption('');

  step('operator: settlement and reconciliation');
  await page.goto(`${HUB}/console#/reports?anomalies=1`);
  await page.getByRole('heading', { name: 'Rendicontazione' }).waitFor();
  await page.getByRole('link', { name: REPORT_A }).waitFor();
  await shot(page, '10-reports');
  await page.getByRole('link', { name: REPORT_A }).click();
  await page.getByText('RT_NOT_FOUND').waitFor();
  await page.getByRole('cell', { name: '01000000000099988' }).waitFor();
  await shot(page, '10b-report-detail');
  await page.goto(`${HUB}/console#/reconciliation`);
  await page.getByRole('heading', { name: 'Riconciliazione' }).waitFor();
  const classLinks = page.locator('section', { hasText: ENTITY_A }).locator('a[href^="#/reconciliation?class="]');
  await classLinks.first().waitFor();
  await shot(page, '11-reconciliation');
  await classLinks.first().click();
  await page.locator('section', { hasText: ': ' }).locator('tbody tr').first().waitFor();
  await shot(page, '11b-reconciliation-class');

  step('English labels, then sign out');
  await page.getByRole('button', { name: 'English' }).click();
  await page.getByRole('heading', { name: 'Reconciliation' }).waitFor();
  await page.getByRole('button', { name: 'Italiano' }).click();
  await page.getByRole('button', { name: 'Esci' }).click();
  await page.waitForURL(/\/console\/login$/);

  // ---- entity A: nothing of entity B, by navigating or by URL ----
  step(`entity ${ENTITY_A}: no data of ${ENTITY_B}`);
  await signIn(KEY_A);
  const options = await page.locator('#entity-select option').allTextContents();
  assert.equal(options.length, 1, `one entity to choose: ${options}`);
  assert.ok(options[0].includes(ENTITY_A));
  assert.equal(await page.locator('table.pipelines').getByText('feltre', { exact: false }).count(), 0, 'no pipeline of B on the overview');
  await shot(page, '12-entity-overview');
  await page.goto(`${HUB}/console#/flows`);
  await page.locator('table.flows').waitFor();
  assert.equal(await page.getByText(FLOW_B_FILE).count(), 0, 'B\'s flow is not listed');
  await page.goto(`${HUB}/console#/flows/${FLOW_B}`);
  await page.locator('p.error').waitFor();
  assert.equal(await page.getByText(FLOW_B_FILE).count(), 0, 'B\'s flow is not shown by its URL');
  await shot(page, '13-entity-refused');
  for (const events of [`/console/api/events?entity=${ENTITY_B}`]) {
    const r = await page.request.get(`${HUB}${events}`, { timeout: 5000 });
    assert.equal(r.status(), 403, events);
  }
  const refused = {
    [`/console/api/flows?entity=${ENTITY_B}`]: 403,
    [`/console/api/flows/${FLOW_B}`]: 404,
    [`/console/api/flows/${FLOW_B}/files/x.zip`]: 404,
    [`/console/api/overview?entity=${ENTITY_B}`]: 403,
    [`/console/api/pipelines?entity=${ENTITY_B}`]: 403,
    [`/console/api/positions?entity=${ENTITY_B}&iud=X`]: 403,
    [`/console/api/positions/${ENTITY_B}/X`]: 403,
    [`/console/api/positions/${ENTITY_B}/X/notice.pdf`]: 403,
    [`/console/api/receipts?entity=${ENTITY_B}`]: 403,
    [`/console/api/deliveries?entity=${ENTITY_B}`]: 403,
    [`/console/api/reports?entity=${ENTITY_B}`]: 403,
    [`/console/api/reconciliation?entity=${ENTITY_B}`]: 403,
  };
  for (const [url, status] of Object.entries(refused)) {
    const r = await page.request.get(`${HUB}${url}`);
    assert.equal(r.status(), status, `${url}: ${r.status()} ${await r.text()}`);
  }
  // Lists without an entity are A's only.
  const flows = await (await page.request.get(`${HUB}/console/api/flows`)).json();
  assert.ok(flows.length > 0 && flows.every((f) => f.entity === ENTITY_A), `A's flows only: ${flows.map((f) => f.entity)}`);
  const dl = await (await page.request.get(`${HUB}/console/api/deliveries?status=delivered`)).json();
  assert.ok(dl.every((d) => d.entity === ENTITY_A), 'A\'s deliveries only');
  const ps = await (await page.request.get(`${HUB}/console/api/pipelines`)).json();
  assert.ok(ps.length > 0 && ps.every((p) => p.entity === ENTITY_A), 'A\'s pipelines only');
  const reps = await (await page.request.get(`${HUB}/console/api/reports`)).json();
  assert.ok(reps.some((r) => r.iuf === REPORT_A) && !reps.some((r) => r.iuf === REPORT_B), 'A\'s settlement flows only');
  assert.equal((await page.request.get(`${HUB}/console/api/reports/${ENTITY_B}/${REPORT_B}`)).status(), 403);
  const recon = await (await page.request.get(`${HUB}/console/api/reconciliation`)).json();
  assert.ok(recon.summaries.length === 1 && recon.summaries[0].entity === ENTITY_A, 'A\'s reconciliation only');
  const rc = await (await page.request.get(`${HUB}/console/api/receipts`)).json();
  assert.ok([...rc.held, ...rc.flagged, ...rc.recent].every((r) => r.entity === ENTITY_A), 'A\'s receipts only');
  // B's dead letters cannot be replayed from A's session, even with A's CSRF token.
  const me = await (await page.request.get(`${HUB}/console/api/me`)).json();
  const replay = await page.request.post(`${HUB}/console/api/dlq/replay?entity=${ENTITY_B}`, { headers: { 'x-csrf-token': me.csrf } });
  assert.equal(replay.status(), 403);
  // Events of A's session carry A's events only.
  const seen = await page.evaluate(() => new Promise((res) => {
    const es = new EventSource('/console/api/events');
    const got = [];
    es.onmessage = (m) => { got.push(JSON.parse(m.data).entity); };
    setTimeout(() => { es.close(); res(got); }, 2500);
  }));
  assert.ok(seen.length > 0 && seen.every((e) => e === ENTITY_A), `A's events only: ${[...new Set(seen)]}`);

  step('tablet width');
  await page.setViewportSize({ width: 820, height: 1100 });
  await page.goto(`${HUB}/console#/overview`);
  await page.locator('table.pipelines').waitFor();
  await shot(page, '14-tablet');

  step('a key a reload removes ends its sessions');
  const config = `${HOME}/config.toml`;
  const configured = readFileSync(config, 'utf8');
  assert.ok(configured.includes(KEY_A), 'the configuration holds entity A\'s key');
  writeFileSync(config, configured.replace(KEY_A, 'another-key-of-entity-a-0123456789'));
  const reload = await fetch(`${HUB}/admin/reload`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } });
  assert.equal(reload.status, 200, await reload.text());
  assert.equal((await page.request.get(`${HUB}/console/api/me`)).status(), 401, 'the session of the removed key is over');
  await page.goto(`${HUB}/console`);
  await page.waitForURL(/\/console\/login$/);

  assert.deepEqual(errors.filter((e) => !/401|403|404/.test(e)), [], 'no script errors (a CSP violation would show here)');

  step('failed sign-ins are bounded per address');
  let limited = null;
  for (let i = 0; i < 80 && !limited; i++) {
    const r = await fetch(`${HUB}/console/login`, {
      method: 'POST', redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=wrong-again',
    });
    if (r.status === 429) limited = r;
    else assert.equal(r.status, 401);
  }
  assert.ok(limited, 'refused with 429 after too many failures');
  assert.ok(Number(limited.headers.get('retry-after')) >= 1, 'with Retry-After');
  const right = await fetch(`${HUB}/console/login`, {
    method: 'POST', redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${encodeURIComponent(ADMIN)}`,
  });
  assert.equal(right.status, 429, 'even the right token waits: the bound comes before the token is looked at');
  step('all checks passed');
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
if (failed) {
  console.error('console.spec: FAILED:', failed);
  process.exit(1);
}
