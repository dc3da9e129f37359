// The Portcullis dashboard: reads the admin API of the listener that served it (the session
// cookie authenticates every call) and draws it. Everything is built with DOM nodes and
// textContent: event fields (paths, user ids) are attacker-controlled text.
'use strict';

const SAMPLE_MS = 5000;
const HISTORY = 60; // samples kept per series: 5 minutes at 5 s
const MAX_EVENTS = 200;
const LIMIT_REASONS = ['rate_limit', 'rate_limit_suspicious', 'threat', 'auth_lockout', 'store_unavailable'];

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  }
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (response.status === 401) { location.href = '/'; throw new Error('signed out'); }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

// ---- live events -------------------------------------------------------------------------

function eventRow(e) {
  const time = (e.timestamp || '').replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  const request = [e.method, e.endpoint].filter(Boolean).join(' ');
  return el('tr', { class: 'fresh', 'data-seq': e.seq ?? '' },
    el('td', {}, time),
    el('td', { class: `sev-${e.severity}` }, e.severity),
    el('td', {}, e.event_type),
    el('td', {}, e.reason),
    el('td', {}, request),
    el('td', {}, e.ip ?? ''),
    el('td', {}, e.user_id ?? ''));
}

function showEvent(e) {
  const body = $('events');
  body.prepend(eventRow(e));
  while (body.rows.length > MAX_EVENTS) body.deleteRow(body.rows.length - 1);
}

function connectStream() {
  const state = $('stream-state');
  const source = new EventSource('/admin/events/stream');
  source.onopen = () => { state.textContent = 'live'; state.className = 'pill live'; };
  source.onerror = () => { state.textContent = 'reconnecting'; state.className = 'pill down'; };
  source.onmessage = (message) => {
    try { showEvent(JSON.parse(message.data)); } catch (_) { /* a malformed line is skipped */ }
  };
  source.addEventListener('gap', (message) => {
    const missed = JSON.parse(message.data).missed;
    showEvent({ severity: 'low', event_type: 'stream', reason: `${missed} events missed` });
  });
}

async function loadRecentEvents() {
  const recent = await getJson('/admin/events');
  const events = Array.isArray(recent) ? recent : (recent.events || []);
  for (const e of events.slice(-50)) showEvent(e);
}

// ---- metrics ----------------------------------------------------------------------------

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-z_:]+)(?:\{(.*)\})?\s+([0-9.eE+-]+|NaN)$/);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[2] || '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

const series = { reasons: new Map(), limits: new Map() };
let previous = null;

function push(map, key, value) {
  const points = map.get(key) || [];
  points.push(value);
  if (points.length > HISTORY) points.shift();
  map.set(key, points);
}

// One bar per sample, newest on the right: readable from the first sample on.
function sparkline(points) {
  const w = 240, h = 28, max = Math.max(1, ...points);
  const step = w / HISTORY;
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const base = document.createElementNS('http://www.w3.org/2000/svg', 'line');
  for (const [k, v] of Object.entries({ x1: 0, x2: w, y1: h - 0.5, y2: h - 0.5, stroke: '#26313d' })) base.setAttribute(k, v);
  svg.append(base);
  points.forEach((v, i) => {
    if (v <= 0) return;
    const bar = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
    const height = Math.max(2, (v / max) * (h - 2));
    bar.setAttribute('x', ((HISTORY - points.length + i) * step + 0.5).toFixed(1));
    bar.setAttribute('y', (h - height).toFixed(1));
    bar.setAttribute('width', Math.max(1, step - 1).toFixed(1));
    bar.setAttribute('height', height.toFixed(1));
    bar.setAttribute('fill', '#5fb3f9');
    svg.append(bar);
  });
  return svg;
}

function drawCharts(target, map) {
  const box = $(target);
  box.replaceChildren();
  const rows = [...map.entries()].sort((a, b) => sum(b[1]) - sum(a[1])).slice(0, 8);
  if (!rows.length) { box.append(el('div', { class: 'empty' }, 'nothing yet')); return; }
  for (const [name, points] of rows) {
    box.append(el('div', { class: 'chart', 'data-name': name },
      el('span', { class: 'name', title: name }, name), sparkline(points),
      el('span', { class: 'count' }, sum(points))));
  }
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);

function drawBars(target, totals) {
  const box = $(target);
  box.replaceChildren();
  const rows = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10);
  if (!rows.length) { box.append(el('div', { class: 'empty' }, 'no refusals')); return; }
  const max = rows[0][1] || 1;
  for (const [name, value] of rows) {
    const fill = el('div', { class: 'fill' });
    fill.style.width = `${(100 * value / max).toFixed(1)}%`;
    box.append(el('div', { class: 'bar', 'data-name': name },
      el('span', { class: 'name', title: name }, name), el('div', {}, fill), el('span', { class: 'count' }, value)));
  }
}

async function sampleMetrics() {
  const response = await fetch('/metrics', { cache: 'no-store' });
  const samples = parseMetrics(await response.text());
  const byReason = new Map(), byRoute = new Map();
  let requests = 0, denials = 0, findings = 0;
  for (const s of samples) {
    if (s.name === 'portcullis_requests_total') requests += s.value;
    if (s.name === 'portcullis_detector_findings') findings += s.value;
    if (s.name === 'portcullis_denials_total') {
      denials += s.value;
      byReason.set(s.labels.reason, (byReason.get(s.labels.reason) || 0) + s.value);
      byRoute.set(s.labels.route, (byRoute.get(s.labels.route) || 0) + s.value);
    }
  }
  const limited = LIMIT_REASONS.reduce((a, r) => a + (byReason.get(r) || 0), 0);
  $('total-requests').textContent = requests;
  $('total-denials').textContent = denials;
  $('total-limited').textContent = limited;
  $('total-findings').textContent = findings;
  for (const [reason, total] of byReason) {
    const delta = previous ? Math.max(0, total - (previous.get(reason) || 0)) : total;
    push(LIMIT_REASONS.includes(reason) ? series.limits : series.reasons, reason, delta);
  }
  previous = byReason;
  drawCharts('by-reason', series.reasons);
  drawCharts('limits', series.limits);
  drawBars('by-route', byRoute);
}

// ---- offenders, inventory, health ---------------------------------------------------------

async function loadOffenders() {
  const data = await getJson('/admin/offenders');
  const body = $('offenders');
  body.replaceChildren();
  for (const p of data.principals || []) {
    body.append(el('tr', {}, el('td', {}, `user ${p.principal}`), el('td', {}, '+20'),
      el('td', {}, `flagged: ${p.reason} (${Math.round(p.flagged_for / 60)} min left)`)));
  }
  for (const c of (data.clients || []).slice(0, 15)) {
    const flag = c.flagged_for > 0 ? ` · flagged: ${c.flag_reason || 'detector'}` : '';
    const lock = c.locked_for > 0 ? ` · locked ${c.locked_for}s` : '';
    body.append(el('tr', {}, el('td', {}, c.ip), el('td', {}, c.score),
      el('td', {}, `${(c.factors || []).join(', ')}${flag}${lock}`)));
  }
  if (!body.rows.length) body.append(el('tr', {}, el('td', { class: 'empty', colspan: '3' }, 'no offenders')));
}

async function loadInventory() {
  const data = await getJson('/admin/inventory');
  const entries = Array.isArray(data) ? data : (data.endpoints || []);
  const body = $('inventory');
  body.replaceChildren();
  entries.sort((a, b) => (a.documented === b.documented ? b.count - a.count : a.documented ? 1 : -1));
  for (const e of entries.slice(0, 200)) {
    const kind = e.documented ? 'documented' : 'shadow';
    const statuses = Array.isArray(e.statuses) ? e.statuses.join(' ') : '';
    const seen = e.last_seen ? new Date(e.last_seen * 1000).toISOString().replace('T', ' ').slice(0, 19) : '';
    body.append(el('tr', { class: kind }, el('td', {}, e.method), el('td', {}, e.path),
      el('td', {}, el('span', { class: `badge ${kind}` }, kind)), el('td', {}, e.count ?? 0),
      el('td', {}, statuses), el('td', {}, seen)));
  }
  if (!body.rows.length) body.append(el('tr', {}, el('td', { class: 'empty', colspan: '6' }, 'no traffic yet')));
}

async function loadHealth() {
  const h = await getJson('/admin/health');
  const box = $('health');
  box.replaceChildren();
  const dot = (label, state, title) => box.append(el('span', { class: `dot ${state}`, title: title || '' }, label));
  dot(`redis: ${h.redis}`, h.redis === 'ok' ? 'ok' : h.redis === 'not used' ? 'off' : 'bad');
  for (const k of h.key_sets || []) dot(`keys ${k.issuer}: ${k.loaded ? 'loaded' : 'missing'}`, k.loaded ? 'ok' : 'bad',
    k.age_secs >= 0 ? `fetched ${k.age_secs}s ago` : 'from a file');
  dot(`policy: ${h.policy_engine}`, h.policy_engine === 'none' ? 'off' : 'ok');
  if (h.decision_log) dot(`decision log: ${h.decision_log.written} written, ${h.decision_log.dropped} dropped`,
    h.decision_log.dropped > 0 ? 'bad' : 'ok');
}

function every(ms, task) {
  const run = () => task().catch(() => { /* shown as stale; retried next tick */ });
  run();
  setInterval(run, ms);
}

document.addEventListener('DOMContentLoaded', () => {
  loadRecentEvents().catch(() => {}).finally(connectStream);
  every(SAMPLE_MS, sampleMetrics);
  every(SAMPLE_MS, loadOffenders);
  every(SAMPLE_MS, loadInventory);
  every(SAMPLE_MS, loadHealth);
});
