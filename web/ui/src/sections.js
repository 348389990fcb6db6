// The page's other sections, each drawn from a plain JSON view of the document (live or
// as of a seq): budget meter, task table, DNA bank, presence, corrections feed.

import { h, setAttr, setText, syncList } from './dom.js'
import { brief, countdown, money, timeAgo } from './format.js'
import { thumbnail } from './board.js'

const TASK_STATUSES = ['pending', 'claimed', 'running', 'done', 'failed']

export function renderBudget (root, budget) {
  const b = budget || {}
  const total = figure(b.total)
  const spent = figure(b.spent)
  const reserved = figure(b.reserved)
  const available = figure(b.available)
  setAttr(root, 'data-budget-available', typeof b.available === 'number' ? b.available : '')
  for (const [name, value] of [['total', total], ['spent', spent], ['reserved', reserved], ['available', available]]) {
    setText(root.querySelector(`[data-figure="${name}"]`), money(value, b.currency))
  }
  const share = (v) => (total > 0 ? `${Math.min(100, Math.max(0, (v / total) * 100)).toFixed(2)}%` : '0%')
  root.querySelector('.bar-spent').style.width = share(spent)
  root.querySelector('.bar-reserved').style.width = share(reserved)
  const low = total > 0 && available / total < 0.1
  root.classList.toggle('low', low)
  setAttr(root.querySelector('.bar'), 'aria-valuenow', available)
  setAttr(root.querySelector('.bar'), 'aria-valuemax', total)
}

const figure = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0)

export function renderTasks (table, tasks) {
  const body = table.tBodies[0]
  const rows = Object.entries(tasks || {})
    .filter(([, t]) => t && typeof t === 'object' && !Array.isArray(t))
    .map(([id, t]) => ({ id, ...t }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) // fixed order: rows never jump
  syncList(body, rows, (t) => t.id, taskRow, updateTaskRow)
  table.closest('section').querySelector('.empty').hidden = rows.length > 0
  table.hidden = rows.length === 0
}

function taskRow () {
  return h('tr', {},
    h('td', { class: 'mono', 'data-col': 'id' }), h('td', { 'data-col': 'kind' }),
    h('td', { class: 'mono', 'data-col': 'shot' }), h('td', { 'data-col': 'status' }, h('span', { class: 'pill' })),
    h('td', { class: 'num', 'data-col': 'attempt' }), h('td', { 'data-col': 'holder' }),
    h('td', { class: 'countdown', 'data-col': 'expires' }))
}

function updateTaskRow (row, task) {
  const cell = (name) => row.querySelector(`[data-col="${name}"]`)
  setText(cell('id'), task.id)
  setText(cell('kind'), task.kind || '')
  setText(cell('shot'), task.shot_id || '')
  const pill = cell('status').firstChild
  setText(pill, task.status || '—')
  pill.className = `pill task-${TASK_STATUSES.includes(task.status) ? task.status : 'other'}`
  setText(cell('attempt'), typeof task.attempt === 'number' ? task.attempt : '')
  setText(cell('holder'), task.lease_holder || task.assignee || '')
  const expires = typeof task.lease_expires_at === 'string' && task.lease_holder ? task.lease_expires_at : null
  setAttr(cell('expires'), 'data-expires', expires)
  setAttr(cell('expires'), 'title', expires)
  tickCountdown(cell('expires'))
}

/** Refresh one lease countdown cell (called every second for all of them). */
export function tickCountdown (cell, now = Date.now()) {
  const expires = cell.getAttribute('data-expires')
  setText(cell, expires ? countdown(expires, now) : '')
  cell.classList.toggle('expired', Boolean(expires) && Date.parse(expires) < now)
}

export function renderDna (root, ctx, bank, artifacts) {
  const entries = Object.entries(bank || {})
    .filter(([, c]) => c && typeof c === 'object' && !Array.isArray(c))
    .map(([id, c]) => ({ id, ...c }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  syncList(root, entries, (c) => c.id, dnaCard, (el, c) => updateDnaCard(el, c, ctx, artifacts || {}))
  root.parentElement.querySelector('.empty').hidden = entries.length > 0
}

function dnaCard () {
  return h('article', { class: 'dna-card' },
    h('div', { class: 'dna-refs' }),
    h('div', { class: 'dna-body' },
      h('header', {}, h('h4', {}), h('span', { class: 'version' })),
      h('p', { class: 'dna-desc' }), h('ul', { class: 'traits' })))
}

function updateDnaCard (el, c, ctx, artifacts) {
  setText(el.querySelector('h4'), c.name || c.id)
  setText(el.querySelector('.version'), typeof c.version === 'number' ? `v${c.version}` : '')
  setText(el.querySelector('.dna-desc'), c.description || '')
  const traits = c.traits && typeof c.traits === 'object' ? Object.entries(c.traits) : []
  const traitsKey = JSON.stringify(traits)
  const list = el.querySelector('.traits')
  if (list.dataset.shown !== traitsKey) {
    list.dataset.shown = traitsKey
    list.replaceChildren(...traits.map(([k, v]) => h('li', {}, h('b', {}, k), ' ', typeof v === 'string' ? v : JSON.stringify(v))))
  }
  const refs = Array.isArray(c.reference_artifacts) ? c.reference_artifacts.filter((id) => typeof id === 'string') : []
  const refsEl = el.querySelector('.dna-refs')
  const refsKey = refs.join('|')
  if (refsEl.dataset.shown !== refsKey || !refsEl.firstChild) {
    refsEl.dataset.shown = refsKey
    const initials = (c.name || c.id).split(/\s+/).map((w) => w[0]).join('').slice(0, 2).toUpperCase()
    refsEl.replaceChildren(...(refs.length
      ? refs.slice(0, 1).map((id) => thumbnail(ctx, { id, ...(artifacts[id] || {}) }, 'portrait'))
      : [h('span', { class: 'portrait-initials' }, initials)]))
  }
}

/** People and agents from Yjs awareness (each client's `user`), this page first. */
export function renderPresence (root, awareness, selfId) {
  const people = []
  for (const [clientId, state] of awareness.getStates()) {
    const user = state && typeof state.user === 'object' && state.user ? state.user : null
    if (!user) continue
    people.push({
      clientId,
      name: typeof user.name === 'string' && user.name ? user.name : `client ${clientId}`,
      kind: user.kind === 'agent' ? 'agent' : 'person',
      color: typeof user.color === 'string' ? user.color : null,
      self: clientId === selfId
    })
  }
  people.sort((a, b) => (b.self - a.self) || a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name))
  syncList(root, people, (p) => p.clientId, presenceEntry, updatePresenceEntry)
  return people
}

function presenceEntry () {
  return h('li', { class: 'presence', 'data-presence': '' },
    h('span', { class: 'avatar' }), h('span', { class: 'who' }), h('span', { class: 'kind' }))
}

function updatePresenceEntry (el, p) {
  setAttr(el, 'data-presence', p.name)
  setAttr(el, 'data-kind', p.kind)
  const avatar = el.querySelector('.avatar')
  setText(avatar, p.kind === 'agent' ? '⚙' : p.name.slice(0, 1).toUpperCase())
  avatar.style.background = p.color || (p.kind === 'agent' ? '#64748b' : '#6366f1')
  setText(el.querySelector('.who'), p.self ? `${p.name} (you)` : p.name)
  setText(el.querySelector('.kind'), p.kind)
}

export function renderCorrections (root, items) {
  const newest = items.slice(-50).reverse() // newest first, a bounded feed
  syncList(root, newest, (c) => `${c.seq}:${c.path}:${c.rule}:${c.created_at}`, correctionEntry, updateCorrection)
  root.parentElement.querySelector('.empty').hidden = items.length > 0
}

function correctionEntry () {
  return h('li', { class: 'correction' },
    h('div', { class: 'correction-head' }, h('span', { class: 'rule pill' }), h('code', { class: 'path' })),
    h('div', { class: 'change' }, h('span', { class: 'before' }), ' → ', h('span', { class: 'after' })),
    h('div', { class: 'muted small' }))
}

const RULE_TEXT = {
  server_only: 'only the server writes this',
  wrong_type: 'wrong type',
  plain_entry: 'plain object made a Map',
  bad_id: 'invalid id',
  lattice: 'status cannot move back'
}

function updateCorrection (el, c) {
  const rule = el.querySelector('.rule')
  setText(rule, c.rule)
  setAttr(rule, 'title', RULE_TEXT[c.rule] || c.rule)
  setText(el.querySelector('.path'), c.path)
  setText(el.querySelector('.before'), brief(c.before))
  setText(el.querySelector('.after'), brief(c.after))
  setText(el.querySelector('.small'), `${RULE_TEXT[c.rule] || c.rule} · seq ${c.seq} · by ${c.actor} · ${timeAgo(c.created_at)}`)
}
