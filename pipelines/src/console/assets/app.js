// snodo console: plain JavaScript, no build step. Everything it shows comes from
// /console/api/..., which scopes every answer to the signed-in entity on the server.
'use strict';

const T = {
  it: {
    overview: 'Panoramica', pipelines: 'Pipeline', flows: 'Flussi', positions: 'Posizioni',
    receipts: 'Ricevute', deliveries: 'Consegne', events: 'Eventi', reports: 'Rendicontazione',
    reconciliation: 'Riconciliazione', allEntities: 'Tutti gli enti', entity: 'Ente',
    signOut: 'Esci', lang: 'English', operator: 'operatore', loading: 'Caricamento…',
    name: 'Nome', kind: 'Tipo', state: 'Stato', lastRun: 'Ultima esecuzione', lastError: 'Ultimo errore',
    perHour: 'Ultima ora', flowsToday: 'Flussi di oggi per stato', none: 'Nessuno',
    receiptsStored: 'Ricevute memorizzate', held: 'Trattenute', flagged: 'Segnalate', dead: 'Consegne fallite (DLQ)',
    rowsAccepted: 'Righe accettate', rowsRejected: 'Righe scartate', soapOk: 'Risposte SOAP OK', soapFaults: 'Fault SOAP',
    lastHour: 'Ultima ora', lastDay: 'Ultimo giorno', chartReceipts: 'Ricevute', chartRows: 'Righe importate',
    chartDelivered: 'Consegnate', chartSoap: 'Risposte SOAP',
    file: 'File', status: 'Stato', rows: 'Righe', accepted: 'Accettate', rejected: 'Scartate', created: 'Creato',
    error: 'Errore', outcomeFiles: 'File di esito', rejectedRows: 'Righe scartate', noRejected: 'Nessuna riga scartata',
    code: 'Codice', message: 'Messaggio', download: 'Scarica', back: 'Indietro', truncated: 'Elenco troncato',
    search: 'Cerca', searchBy: 'Cerca per', iud: 'IUD', iuv: 'IUV', notice: 'Numero avviso', fiscalCode: 'Codice fiscale',
    value: 'Valore', amount: 'Importo', payer: 'Pagatore', history: 'Storico', action: 'Azione', source: 'Origine',
    at: 'Quando', receipt: 'Ricevuta', noticePdf: 'Avviso di pagamento (PDF)', noResults: 'Nessun risultato',
    reason: 'Motivo', release: 'Rilascia', dismiss: 'Scarta', viewXml: 'XML', recent: 'Più recenti',
    heldTitle: 'Trattenute (in attesa di decisione)', flaggedTitle: 'Segnalate', psp: 'PSP', received: 'Ricevuta il',
    attempts: 'Tentativi', replay: 'Riprova', replayAll: 'Riprova tutte', pipeline: 'Pipeline', key: 'Chiave',
    delivered: 'Consegnate', pending: 'In attesa', replayed: 'Rimesse in coda', confirm: 'Confermi?',
    live: 'In diretta', paused: 'In pausa', filterKind: 'Tipo di evento (es. receipt)', apply: 'Applica', subject: 'Oggetto',
    anomalies: 'Anomalie', onlyAnomalies: 'Solo con anomalie', flowDate: 'Data flusso', payments: 'Pagamenti', linked: 'Collegati',
    classes: 'Classi', items: 'Voci', movements: 'Movimenti', drill: 'Dettaglio', done: 'Fatto',
    deliveriesOf: 'Consegne', steps: { source: 'sorgente', decode: 'decodifica', encode: 'codifica', destination: 'destinazione', outcomes: 'esiti' },
    states: { running: 'attiva', starting: 'in avvio', suspended: 'sospesa', 'pre-production': 'collaudo' },
    standing: 'continuo (API, Kafka)',
    counters: 'Contatori', entityOnly: 'Sessione dell\'ente', failed: 'Operazione non riuscita',
  },
  en: {
    overview: 'Overview', pipelines: 'Pipelines', flows: 'Flows', positions: 'Positions',
    receipts: 'Receipts', deliveries: 'Deliveries', events: 'Events', reports: 'Settlement',
    reconciliation: 'Reconciliation', allEntities: 'All entities', entity: 'Entity',
    signOut: 'Sign out', lang: 'Italiano', operator: 'operator', loading: 'Loading…',
    name: 'Name', kind: 'Kind', state: 'State', lastRun: 'Last run', lastError: 'Last error',
    perHour: 'Last hour', flowsToday: 'Flows today by state', none: 'None',
    receiptsStored: 'Receipts stored', held: 'Held', flagged: 'Flagged', dead: 'Dead letters',
    rowsAccepted: 'Rows accepted', rowsRejected: 'Rows rejected', soapOk: 'SOAP answers OK', soapFaults: 'SOAP faults',
    lastHour: 'Last hour', lastDay: 'Last day', chartReceipts: 'Receipts', chartRows: 'Rows imported',
    chartDelivered: 'Delivered', chartSoap: 'SOAP answers',
    file: 'File', status: 'Status', rows: 'Rows', accepted: 'Accepted', rejected: 'Rejected', created: 'Created',
    error: 'Error', outcomeFiles: 'Outcome files', rejectedRows: 'Rejected rows', noRejected: 'No rejected rows',
    code: 'Code', message: 'Message', download: 'Download', back: 'Back', truncated: 'List truncated',
    search: 'Search', searchBy: 'Search by', iud: 'IUD', iuv: 'IUV', notice: 'Notice number', fiscalCode: 'Fiscal code',
    value: 'Value', amount: 'Amount', payer: 'Payer', history: 'History', action: 'Action', source: 'Source',
    at: 'When', receipt: 'Receipt', noticePdf: 'Payment notice (PDF)', noResults: 'No results',
    reason: 'Reason', release: 'Release', dismiss: 'Dismiss', viewXml: 'XML', recent: 'Latest',
    heldTitle: 'Held (waiting for a decision)', flaggedTitle: 'Flagged', psp: 'PSP', received: 'Received',
    attempts: 'Attempts', replay: 'Replay', replayAll: 'Replay all', pipeline: 'Pipeline', key: 'Key',
    delivered: 'Delivered', pending: 'Pending', replayed: 'Put back in the outbox', confirm: 'Are you sure?',
    live: 'Live', paused: 'Paused', filterKind: 'Event kind (e.g. receipt)', apply: 'Apply', subject: 'Subject',
    anomalies: 'Anomalies', onlyAnomalies: 'Only with anomalies', flowDate: 'Flow date', payments: 'Payments', linked: 'Linked',
    classes: 'Classes', items: 'Items', movements: 'Movements', drill: 'Details', done: 'Done',
    deliveriesOf: 'Deliveries', steps: { source: 'source', decode: 'decode', encode: 'encode', destination: 'destination', outcomes: 'outcomes' },
    states: { running: 'running', starting: 'starting', suspended: 'suspended', 'pre-production': 'pre-production' },
    standing: 'standing (API, Kafka)',
    counters: 'Counters', entityOnly: 'Entity session', failed: 'The operation failed',
  },
};

const S = { me: null, entity: '', lang: localStorage.getItem('snodo-lang') || 'it', events: null };
const t = (k) => T[S.lang][k] || k;

// Elements are built with text nodes only: nothing the hub returns is parsed as HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const svg = (tag, attrs) => {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
};

async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: 'same-origin', ...opts });
  if (r.status === 401) { location.href = '/console/login'; throw new Error('signed out'); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status);
  return body;
}
const post = (path) => api(path, { method: 'POST', headers: { 'X-CSRF-Token': S.me.csrf } });
const q = (params) => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const s = u.toString();
  return s ? '?' + s : '';
};
const euro = (cents) => (cents === null || cents === undefined) ? '' :
  new Intl.NumberFormat(S.lang === 'it' ? 'it-IT' : 'en-GB', { style: 'currency', currency: 'EUR' }).format(cents / 100);
const when = (s) => {
  if (!s) return '';
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString(S.lang === 'it' ? 'it-IT' : 'en-GB', { timeZone: 'Europe/Rome' });
};

function table(headers, rows, opts = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, t('none'));
  return h('div', { class: 'scroll' }, h('table', { class: opts.class || '' },
    opts.caption ? h('caption', {}, opts.caption) : null,
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows.map((r) => h('tr', r.attrs || {}, (r.cells || r).map((c) => h('td', {}, c)))))));
}
const badge = (text, kind) => h('span', { class: 'badge ' + (kind || String(text).toLowerCase().replace(/[^a-z_]/g, '')) }, text);
const section = (title, ...body) => h('section', { 'aria-label': title }, h('h2', {}, title), ...body);
const note = (text, cls) => h('p', { class: cls || 'note', role: cls === 'error' ? 'alert' : 'status' }, text);

function stopEvents() { if (S.events) { S.events.close(); S.events = null; } }

// ---------- overview ----------
function chart(title, points, keys) {
  const W = 320, H = 110, P = 22;
  const box = h('figure', { class: 'chart' });
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  s.append(svg('rect', { x: 0, y: 0, width: W, height: H, class: 'bg' }));
  const series = keys.map(([k]) => points.map((p) => (p[k] || 0) - (points[0][k] || 0)));
  const max = Math.max(1, ...series.flat());
  const t0 = points.length ? points[0].at : 0, t1 = points.length ? points[points.length - 1].at : 1;
  const x = (at) => P + (W - 2 * P) * (t1 > t0 ? (at - t0) / (t1 - t0) : 1);
  const y = (v) => H - P + 4 - (H - 2 * P) * (v / max);
  s.append(svg('line', { x1: P, y1: y(0), x2: W - P, y2: y(0), class: 'axis' }));
  const top = svg('text', { x: 2, y: y(max) + 4, class: 'tick' }); top.textContent = String(max); s.append(top);
  series.forEach((vals, i) => {
    const d = vals.map((v, j) => `${j ? 'L' : 'M'}${x(points[j].at).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    s.append(svg('path', { d, class: 'line s' + i }));
  });
  const legend = h('figcaption', {}, h('strong', {}, title), ' ',
    keys.map(([k, label], i) => h('span', { class: 'key s' + i }, `${label} +${series[i][series[i].length - 1] || 0}`)));
  box.append(s, legend);
  return box;
}

async function viewOverview(main) {
  const o = await api('/console/api/overview' + q({ entity: S.entity }));
  const r = o.receipts;
  const cards = [
    [t('receiptsStored'), r.stored], [t('held'), r.held, r.held ? 'warn' : ''], [t('flagged'), r.flagged, r.flagged ? 'warn' : ''],
    [t('dead'), r.dead, r.dead ? 'bad' : ''], [t('rowsAccepted'), r.rowsAccepted], [t('rowsRejected'), r.rowsRejected, r.rowsRejected ? 'warn' : ''],
  ];
  if (o.soap) cards.push([t('soapOk'), o.soap.ok], [t('soapFaults'), Object.values(o.soap.faults).reduce((a, b) => a + b, 0), 'warn']);
  main.append(h('h1', {}, t('overview')),
    h('div', { class: 'cards' }, cards.map(([k, v, cls]) => h('div', { class: 'card ' + (cls || '') }, h('span', { class: 'num' }, v), h('span', {}, k)))));
  const charts = (pts) => [
    chart(t('chartReceipts'), pts, [['receipts', t('chartReceipts')]]),
    chart(t('chartRows'), pts, [['rows', t('accepted') + '+' + t('rejected')], ['rejected', t('rejected')]]),
    chart(t('chartDelivered'), pts, [['delivered', t('delivered')], ['dead', t('dead')]]),
    o.soap ? chart(t('chartSoap'), pts, [['soapOk', 'OK'], ['soapFaults', 'fault']]) : null,
  ];
  main.append(section(t('lastHour'), h('div', { class: 'charts' }, charts(o.series.hour))),
    section(t('lastDay'), h('div', { class: 'charts' }, charts(o.series.day))));
  main.append(section(t('pipelines'), table(
    [t('name'), t('entity'), t('kind'), t('state'), t('lastRun'), t('lastError'), t('perHour')],
    o.pipelines.map((p) => [p.name, p.entity, p.kind, badge(t('states')[p.state] || p.state, p.state), when(p.lastRun), p.lastError ? h('span', { class: 'err' }, p.lastError) : '', p.perHour ?? '–']),
    { class: 'pipelines' })));
  const ft = Object.entries(o.flowsToday);
  main.append(section(t('flowsToday'), ft.length ? h('ul', { class: 'inline' }, ft.map(([k, v]) => h('li', {}, badge(k), ' ', v))) : note(t('none'))));
  if (o.soap && Object.keys(o.soap.faults).length) {
    main.append(section(t('soapFaults'), table([t('code'), 'n'], Object.entries(o.soap.faults))));
  }
}

// ---------- pipelines as a picture ----------
async function viewPipelines(main) {
  const ps = await api('/console/api/pipelines' + q({ entity: S.entity }));
  main.append(h('h1', {}, t('pipelines')));
  for (const p of ps) {
    const steps = [];
    p.steps.forEach((s, i) => {
      if (i) steps.push(h('span', { class: 'arrow', 'aria-hidden': 'true' }, '→'));
      steps.push(h('div', { class: 'step ' + s.role }, h('span', { class: 'role' }, t('steps')[s.role] || s.role),
        h('strong', {}, s.what.kind), s.what.detail ? h('span', { class: 'detail' }, s.what.detail) : null));
    });
    const d = p.deliveries || {};
    const counters = p.kind.startsWith('receipts') || p.kind === 'reports' || p.kind === 'reconciliation'
      ? `${t('delivered')} ${d.delivered || 0} · ${t('pending')} ${d.pending || 0} · ${t('dead')} ${d.dead || 0}`
      : `${t('rowsAccepted')} ${p.rows.accepted} · ${t('rowsRejected')} ${p.rows.rejected}`;
    main.append(h('article', { class: 'pipe', 'aria-label': p.name },
      h('h2', {}, p.name, ' ', h('small', {}, `${p.entity} · ${p.kind}`)),
      h('div', { class: 'flow-picture', role: 'list' }, steps.map((s) => { if (s.classList.contains('step')) s.setAttribute('role', 'listitem'); return s; })),
      h('p', { class: 'counters' }, t('counters'), ': ', counters)));
  }
  if (!ps.length) main.append(note(t('none')));
}

// ---------- flows ----------
async function viewFlows(main, id) {
  if (id) return viewFlow(main, id);
  const fs = await api('/console/api/flows' + q({ entity: S.entity }));
  main.append(h('h1', {}, t('flows')), table(
    ['#', t('entity'), t('file'), t('status'), t('rows'), t('accepted'), t('rejected'), t('created')],
    fs.map((f) => [h('a', { href: `#/flows/${f.id}` }, String(f.id)), f.entity, h('a', { href: `#/flows/${f.id}` }, f.file_name),
      f.content_sha256 ? badge(f.status) : badge(t('standing'), 'running'), f.progress.rows_done, f.progress.accepted, f.progress.rejected, when(f.created_at)]),
    { class: 'flows' }));
}

async function viewFlow(main, id) {
  const d = await api(`/console/api/flows/${encodeURIComponent(id)}`);
  const f = d.flow;
  main.append(h('p', {}, h('a', { href: '#/flows' }, '← ' + t('back'))),
    h('h1', {}, f.file_name),
    h('dl', { class: 'facts' },
      h('dt', {}, t('entity')), h('dd', {}, f.entity), h('dt', {}, 'IUF'), h('dd', {}, f.iuf),
      h('dt', {}, t('status')), h('dd', {}, badge(f.status)),
      h('dt', {}, t('rows')), h('dd', {}, f.progress.rows_done), h('dt', {}, t('accepted')), h('dd', {}, f.progress.accepted),
      h('dt', {}, t('rejected')), h('dd', {}, f.progress.rejected),
      f.error_code ? [h('dt', {}, t('error')), h('dd', { class: 'err' }, `${f.error_code}: ${f.error_message || ''}`)] : null,
      h('dt', {}, t('created')), h('dd', {}, when(f.created_at))));
  main.append(section(t('outcomeFiles'), d.files.length ? h('ul', {}, d.files.map((x) =>
    h('li', {}, h('a', { href: `/console/api/flows/${f.id}/files/${encodeURIComponent(x.name)}`, download: x.name }, x.name), ` (${x.bytes} B)`))) : note(t('none'))));
  const rj = d.rejected;
  if (!rj.rows.length) { main.append(section(t('rejectedRows'), note(t('noRejected')))); return; }
  // The MyPay code and message are the last two columns; the IUD the first.
  const n = rj.header.length;
  main.append(section(t('rejectedRows'),
    table([rj.header[0] || 'IUD', t('code'), t('message'), t('rows')],
      rj.rows.map((r) => ({ attrs: { class: 'rejected-row' }, cells: [r[0], h('code', {}, r[n - 2] || ''), r[n - 1] || '', r.slice(1, n - 2).filter(Boolean).slice(0, 4).join(' · ')] })),
      { class: 'rejected' }),
    rj.truncated ? note(t('truncated')) : null));
}

// ---------- positions ----------
async function viewPositions(main, entity, iud) {
  if (entity && iud) return viewPosition(main, entity, iud);
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const by = params.get('by') || 'iud', value = params.get('v') || '';
  const sel = h('select', { id: 'search-by' }, ['iud', 'iuv', 'notice', 'fiscalCode'].map((k) => h('option', { value: k, selected: k === by }, t(k))));
  const input = h('input', { id: 'search-value', type: 'search', value, required: true });
  const form = h('form', { class: 'search', role: 'search', on: { submit: (e) => {
    e.preventDefault(); location.hash = `#/positions?by=${sel.value}&v=${encodeURIComponent(input.value.trim())}`;
  } } },
  h('label', { for: 'search-by' }, t('searchBy')), sel, h('label', { for: 'search-value', class: 'sr' }, t('value')), input, h('button', { type: 'submit' }, t('search')));
  main.append(h('h1', {}, t('positions')), form);
  if (!value) return;
  const ps = await api('/console/api/positions' + q({ entity: S.entity, [by]: value }));
  main.append(ps.length ? table([t('entity'), 'IUD', 'IUV', t('notice'), t('status'), t('amount'), t('payer')],
    ps.map((p) => [p.entity, h('a', { href: `#/positions/${encodeURIComponent(p.entity)}/${encodeURIComponent(p.iud)}` }, p.iud),
      p.iuv || '', p.notice_number || '', badge(p.status), euro(p.amount_cents), (p.dovuto && p.dovuto.payer && p.dovuto.payer.name) || '']),
    { class: 'positions' }) : note(t('noResults')));
}

async function viewPosition(main, entity, iud) {
  const ds = await api(`/console/api/positions/${encodeURIComponent(entity)}/${encodeURIComponent(iud)}`);
  main.append(h('p', {}, h('a', { href: '#/positions' }, '← ' + t('back'))), h('h1', {}, `${iud} · ${entity}`));
  if (!ds.length) { main.append(note(t('noResults'))); return; }
  for (const d of ds) {
    const p = d.position;
    main.append(h('dl', { class: 'facts' },
      h('dt', {}, t('status')), h('dd', {}, badge(p.status)), h('dt', {}, 'IUV'), h('dd', {}, p.iuv || ''),
      h('dt', {}, t('notice')), h('dd', {}, p.notice_number || ''), h('dt', {}, t('amount')), h('dd', {}, euro(p.amount_cents)),
      h('dt', {}, t('payer')), h('dd', {}, (p.dovuto && p.dovuto.payer) ? `${p.dovuto.payer.name || ''} (${p.dovuto.payer.id || ''})` : ''),
      h('dt', {}, t('created')), h('dd', {}, when(p.created_at))));
    if (p.status === 'active' && p.notice_number) {
      main.append(h('p', {}, h('a', { href: `/console/api/positions/${encodeURIComponent(entity)}/${encodeURIComponent(iud)}/notice.pdf`, class: 'button' }, t('noticePdf'))));
    }
    main.append(section(t('history'), table([t('action'), t('source'), t('at')], d.history.map((x) => [x.action, x.source, when(x.at)]))));
    if (d.receipt) {
      const r = d.receipt;
      main.append(section(t('receipt'), h('dl', { class: 'facts' }, h('dt', {}, 'ID'), h('dd', {}, r.receipt_id),
        h('dt', {}, t('psp')), h('dd', {}, `${r.psp_name} (${r.psp_id})`), h('dt', {}, t('amount')), h('dd', {}, euro(r.amount_cents)),
        h('dt', {}, t('received')), h('dd', {}, when(r.received_at))), h('p', {}, h('a', { href: `#/receipts/${r.id}` }, t('viewXml')))));
    }
  }
}

// ---------- receipts ----------
async function viewReceipts(main, id) {
  if (id) return viewReceipt(main, id);
  const r = await api('/console/api/receipts' + q({ entity: S.entity }));
  main.append(h('h1', {}, t('receipts')));
  const status = h('p', { class: 'note', role: 'status', 'aria-live': 'polite' });
  const act = (rid, what) => async (ev) => {
    if (!confirm(t('confirm'))) return;
    try {
      await post(`/console/api/receipts/${rid}/${what}`);
      status.textContent = `${t('done')}: ${t(what)}`;
      ev.target.closest('tr').remove();
    } catch (e) { status.textContent = `${t('failed')}: ${e.message}`; }
  };
  const cols = [t('entity'), t('receipt'), t('notice'), t('amount'), t('reason'), t('received')];
  const row = (x) => [x.entity, h('a', { href: `#/receipts/${x.id}` }, x.receipt_id), x.notice_number, euro(x.amount_cents), x.issue ? badge(x.issue, 'warn') : '', when(x.received_at)];
  main.append(status,
    section(t('heldTitle'), table([...cols, t('pipelines'), ''], r.held.map((x) => ({ attrs: { class: 'held', 'data-id': x.receipt_id }, cells: [...row(x), (x.held || []).join(', '),
      h('span', { class: 'actions' }, h('button', { type: 'button', on: { click: act(x.id, 'release') } }, t('release')),
        h('button', { type: 'button', class: 'secondary', on: { click: act(x.id, 'dismiss') } }, t('dismiss')))] })))),
    section(t('flaggedTitle'), table([...cols, ''], r.flagged.map((x) => [...row(x), x.review ? badge(x.review) : '']))),
    section(t('recent'), table(cols, r.recent.map(row))));
}

async function viewReceipt(main, id) {
  const d = await api(`/console/api/receipts/${encodeURIComponent(id)}`);
  const r = d.receipt;
  main.append(h('p', {}, h('a', { href: '#/receipts' }, '← ' + t('back'))), h('h1', {}, r.receipt_id),
    h('dl', { class: 'facts' }, h('dt', {}, t('entity')), h('dd', {}, r.entity), h('dt', {}, t('notice')), h('dd', {}, r.notice_number),
      h('dt', {}, 'IUD'), h('dd', {}, d.iud || ''), h('dt', {}, t('amount')), h('dd', {}, euro(r.amount_cents)),
      h('dt', {}, t('psp')), h('dd', {}, `${r.psp_name} (${r.psp_id})`), h('dt', {}, t('reason')), h('dd', {}, r.issue || '–')),
    section('XML', h('pre', { class: 'xml', tabindex: '0' }, d.xml)));
}

// ---------- deliveries and dead letters ----------
async function viewDeliveries(main) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const status = params.get('status') || 'dead';
  const ds = await api('/console/api/deliveries' + q({ entity: S.entity, status }));
  const say = h('p', { class: 'note', role: 'status', 'aria-live': 'polite', id: 'delivery-status' });
  const replay = (path) => async (ev) => {
    try {
      const x = await post(path);
      say.textContent = `${t('replayed')}: ${x.replayed}`;
      ev.target.disabled = true;
    } catch (e) { say.textContent = `${t('failed')}: ${e.message}`; }
  };
  main.append(h('h1', {}, t('deliveries')),
    h('nav', { class: 'tabs', 'aria-label': t('status') }, ['dead', 'pending', 'delivered'].map((s) =>
      h('a', { href: `#/deliveries?status=${s}`, 'aria-current': s === status ? 'page' : null }, t(s)))),
    say);
  if (status === 'dead' && ds.length) main.append(h('p', {}, h('button', { type: 'button', id: 'replay-all', on: { click: replay('/console/api/dlq/replay' + q({ entity: S.entity })) } }, t('replayAll'))));
  main.append(table(['#', t('pipeline'), t('entity'), t('key'), t('attempts'), t('lastError'), t('at'), ''],
    ds.map((d) => ({ attrs: { class: 'delivery', 'data-key': d.idempotency_key }, cells: [String(d.id), d.pipeline, d.entity, d.idempotency_key, d.attempts,
      d.last_error ? h('span', { class: 'err' }, d.last_error) : '', when(d.delivered_at || d.updated_at),
      d.status === 'dead' ? h('button', { type: 'button', class: 'replay', on: { click: replay(`/console/api/dlq/${d.id}/replay`) } }, t('replay')) : badge(d.status)] })),
    { class: 'deliveries' }));
}

// ---------- events ----------
async function viewEvents(main) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const kind = params.get('kind') || '';
  const input = h('input', { id: 'event-kind', type: 'text', value: kind, placeholder: 'receipt, position, flow…' });
  const state = h('span', { class: 'badge running', id: 'live' }, t('live'));
  const list = h('ol', { class: 'events', id: 'event-list', 'aria-live': 'polite', reversed: true });
  main.append(h('h1', {}, t('events'), ' ', state),
    h('form', { class: 'search', on: { submit: (e) => { e.preventDefault(); location.hash = `#/events?kind=${encodeURIComponent(input.value.trim())}`; } } },
      h('label', { for: 'event-kind' }, t('filterKind')), input, h('button', { type: 'submit' }, t('apply'))), list);
  stopEvents();
  const es = new EventSource('/console/api/events' + q({ entity: S.entity, kind }));
  S.events = es;
  es.onopen = () => { state.textContent = t('live'); state.className = 'badge running'; };
  es.onerror = () => { state.textContent = t('paused'); state.className = 'badge warn'; };
  const seen = new Set();
  es.onmessage = (m) => {
    let e; try { e = JSON.parse(m.data); } catch { return; }
    // A reconnection resumes after the last id; the parts of one bulk event share it.
    const key = `${e.id}.${e.part}`;
    if (seen.has(key)) return;
    seen.add(key);
    const plain = Object.entries(e.payload || {}).filter(([, v]) => v !== null && typeof v !== 'object').slice(0, 6).map(([k, v]) => `${k}=${v}`).join(' ');
    list.prepend(h('li', { class: 'event', 'data-kind': e.kind },
      h('time', {}, when(e.at)), ' ', h('strong', {}, e.kind), ' ', h('span', { class: 'ent' }, e.entity), ' ', h('span', {}, e.subject), ' ', h('small', {}, plain)));
    while (list.children.length > 500) list.lastChild.remove();
  };
}

// ---------- settlement and reconciliation ----------
async function viewReports(main, entity, iuf) {
  if (entity && iuf) return viewReport(main, entity, iuf);
  const only = (new URLSearchParams(location.hash.split('?')[1] || '')).get('anomalies') === '1';
  const rs = await api('/console/api/reports' + q({ entity: S.entity, anomalies: only ? 'true' : '' }));
  main.append(h('h1', {}, t('reports')),
    h('p', {}, h('a', { href: only ? '#/reports' : '#/reports?anomalies=1' }, only ? t('reports') : t('onlyAnomalies'))),
    table([t('entity'), 'IUF', t('psp'), t('status'), t('flowDate'), t('payments'), t('linked'), t('anomalies'), t('amount')],
      rs.map((r) => [r.entity, h('a', { href: `#/reports/${encodeURIComponent(r.entity)}/${encodeURIComponent(r.iuf)}` }, r.iuf), r.psp, badge(r.status),
        r.flow_date || '', r.payments, r.linked, r.anomalies ? badge(String(r.anomalies), 'warn') : '0', euro(r.computed.amount_cents)])));
}

async function viewReport(main, entity, iuf) {
  const ds = await api(`/console/api/reports/${encodeURIComponent(entity)}/${encodeURIComponent(iuf)}`);
  main.append(h('p', {}, h('a', { href: '#/reports' }, '← ' + t('back'))), h('h1', {}, iuf));
  for (const d of ds) {
    main.append(h('h2', {}, `${d.psp} · rev. ${d.revision} `, badge(d.status)),
      section(t('anomalies'), table(['#', t('code'), t('kind'), t('message')], (d.anomaly_list || []).map((a) => [a.row_no ?? '', h('code', {}, a.code), a.severity, a.message]))),
      section(t('payments'), table(['#', 'IUV', 'IUR', t('amount'), t('receipt')], (d.rows || []).slice(0, 500).map((r) =>
        [r.row_no, r.iuv, r.iur, euro(r.amount_cents), r.receipt ?? '–']))));
  }
}

async function viewReconciliation(main) {
  const cls = (new URLSearchParams(location.hash.split('?')[1] || '')).get('class') || '';
  const r = await api('/console/api/reconciliation' + q({ entity: S.entity, class: cls }));
  main.append(h('h1', {}, t('reconciliation')));
  for (const s of r.summaries) {
    main.append(section(`${s.entity} · ${t('payments')} ${s.payments} · ${t('movements')} ${s.movements}`,
      table([t('classes'), t('items')], Object.entries(s.classes).map(([c, n]) => [h('a', { href: `#/reconciliation?class=${encodeURIComponent(c)}` }, c), n]))));
  }
  if (cls) {
    main.append(section(`${cls}: ${t('items')}`, table([t('entity'), t('key'), t('kind'), t('classes')],
      r.items.map((i) => [i.entity, i.key, i.kind || '', (i.classes || []).join(', ')]))));
  }
}

// ---------- shell ----------
const VIEWS = [
  ['overview', viewOverview], ['pipelines', viewPipelines], ['flows', viewFlows], ['positions', viewPositions],
  ['receipts', viewReceipts], ['deliveries', viewDeliveries], ['events', viewEvents], ['reports', viewReports],
  ['reconciliation', viewReconciliation],
];

function chrome() {
  document.documentElement.lang = S.lang;
  const nav = document.getElementById('nav');
  const current = (location.hash.slice(2).split(/[/?]/)[0]) || 'overview';
  nav.replaceChildren(h('ul', {}, VIEWS.map(([k]) => h('li', {}, h('a', { href: '#/' + k, 'aria-current': k === current ? 'page' : null }, t(k))))));
  document.getElementById('lang').textContent = t('lang');
  document.getElementById('logout').textContent = t('signOut');
  document.getElementById('entity-label').textContent = t('entity');
  const sel = document.getElementById('entity-select');
  const opts = S.me.role === 'operator' ? [h('option', { value: '' }, t('allEntities'))] : [];
  for (const e of S.me.entities) opts.push(h('option', { value: e.ipa }, `${e.name} (${e.ipa})`));
  sel.replaceChildren(...opts);
  sel.value = S.entity;
  sel.disabled = S.me.role !== 'operator';
  document.getElementById('who').textContent = S.me.role === 'operator' ? `${t('operator')} (${S.me.keyId})` : `${t('entityOnly')}: ${S.me.entity}`;
}

// The overview and the pipelines refresh their counters every 15 s while shown (not while the
// keyboard focus is inside the page, so nobody loses their place).
const LIVE = ['overview', 'pipelines'];

async function render(refresh) {
  clearTimeout(S.timer);
  if (!refresh) stopEvents();
  chrome();
  const main = document.getElementById('main');
  if (!refresh) main.replaceChildren(h('p', { class: 'note' }, t('loading')));
  const hash = location.hash;
  const [path] = hash.slice(2).split('?');
  const [name, ...args] = path.split('/').map(decodeURIComponent);
  const [key, view] = VIEWS.find(([k]) => k === (name || 'overview')) || VIEWS[0];
  const out = h('div', {});
  try {
    await view(out, ...args);
    if (location.hash === hash) main.replaceChildren(...out.childNodes);
  } catch (e) {
    if (e.message !== 'signed out') main.replaceChildren(note(`${t('failed')}: ${e.message}`, 'error'));
  }
  if (LIVE.includes(key)) {
    const tick = () => {
      if (location.hash !== hash) return;
      if (main.contains(document.activeElement)) S.timer = setTimeout(tick, 15000);
      else render(true);
    };
    S.timer = setTimeout(tick, 15000);
  }
}

async function start() {
  try { S.me = await api('/console/api/me'); } catch { return; }
  S.entity = S.me.role === 'entity' ? S.me.entity : (sessionStorage.getItem('snodo-entity') || '');
  document.getElementById('entity-select').addEventListener('change', (e) => {
    S.entity = e.target.value; sessionStorage.setItem('snodo-entity', S.entity); render();
  });
  document.getElementById('lang').addEventListener('click', () => {
    S.lang = S.lang === 'it' ? 'en' : 'it'; localStorage.setItem('snodo-lang', S.lang); render();
  });
  document.getElementById('logout').addEventListener('click', async () => {
    stopEvents();
    try { await post('/console/api/logout'); } catch { /* signed out either way */ }
    location.href = '/console/login';
  });
  window.addEventListener('hashchange', () => render());
  render();
}

document.addEventListener('DOMContentLoaded', start);
