// The project page: a Yjs client of ws://host/sync/{id} (stock y-websocket) drawing the
// shot board, tasks, DNA bank, budget, presence, history and corrections.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { removeAwarenessStates } from 'y-protocols/awareness'
import { Board } from './board.js'
import { setAttr, setText } from './dom.js'
import { ShotEditor, addShot } from './editor.js'
import { PagedTail } from './feeds.js'
import { HistoryScrubber } from './history.js'
import { renderBudget, renderCorrections, renderDna, renderPresence, renderTasks, tickCountdown } from './sections.js'
import { api, claimsOf, displayName, rememberName, sessionToken, showTokenGate, wireTokenGate } from './session.js'

const ROOTS = ['spec', 'shots', 'dna_bank', 'tasks', 'artifacts', 'approvals', 'budget']
const POLL_MS = 5000
const COLORS = ['#6366f1', '#0ea5e9', '#10b981', '#f59e0b', '#ef4444', '#ec4899', '#8b5cf6', '#14b8a6']

const $ = (selector) => document.querySelector(selector)
const projectId = decodeURIComponent(window.location.pathname.split('/')[3] || '')
const token = sessionToken()
const claims = claimsOf(token)
const readOnly = Boolean(claims && claims.role === 'read')
const name = displayName(claims)

const doc = new Y.Doc()
let historyView = null // a plain JSON document while the scrubber shows the past
let projectTitle = '' // from the API, shown until the spec has a title
const ctx = {
  projectId,
  token,
  doc,
  view: () => historyView || liveView(),
  editable: () => !readOnly && historyView === null
}

function liveView () {
  const view = {}
  for (const root of ROOTS) view[root] = doc.getMap(root).toJSON()
  return view
}

// -- the page's own state: who, which role, connected or not --------------------------

setText($('#project-id'), projectId)
if (readOnly) {
  $('#readonly').hidden = false
  setText($('#readonly-who'), claims.actor)
}
if (claims && typeof claims.role === 'string') {
  $('#role-badge').hidden = false
  setText($('#role-badge'), `${claims.actor} · ${claims.role}`)
}

const board = new Board($('#board'), ctx, (shotId) => editor.open(shotId))
const editor = new ShotEditor($('#editor'), ctx)
const scrubber = new HistoryScrubber($('#history'), ctx, (view, seq) => {
  historyView = view
  document.body.classList.toggle('viewing-history', view !== null)
  $('#history-bar').hidden = view === null
  if (view !== null) setText($('#history-bar-seq'), `seq ${seq}`)
  scheduleRender()
})
$('#history-bar-live').addEventListener('click', () => scrubber.backToLive())

const provider = new WebsocketProvider(
  `${window.location.protocol === 'https:' ? 'wss' : 'ws'}://${window.location.host}/sync`,
  projectId, doc, { params: token ? { token } : {}, maxBackoffTime: 5000 })
const color = COLORS[doc.clientID % COLORS.length]
provider.awareness.setLocalStateField('user', { name, kind: 'person', color })

// Leaving the page says goodbye at once (stock y-websocket would leave this page "present"
// for others until its socket times out); a page restored from the back/forward cache
// comes back.
window.addEventListener('pagehide', () => {
  removeAwarenessStates(provider.awareness, [doc.clientID], 'page hidden')
  provider.disconnect()
})
window.addEventListener('pageshow', (event) => {
  if (!event.persisted) return
  provider.awareness.setLocalStateField('user', { name: $('#name').value || name, kind: 'person', color })
  provider.connect()
})

let everConnected = false
function showConnection (state, text) {
  const pill = $('#connection')
  setAttr(pill, 'data-connection', state)
  setText(pill.querySelector('.label'), text)
  const banner = $('#offline')
  banner.hidden = state !== 'retrying' && state !== 'refused'
  banner.classList.toggle('refused', state === 'refused')
}
provider.on('status', ({ status }) => {
  if (status === 'connected') {
    everConnected = true
    showConnection('syncing', 'Syncing…')
  } else if (status === 'disconnected' || (status === 'connecting' && everConnected)) {
    showConnection('retrying', 'Retrying…')
    setText($('#offline-text'), 'Disconnected from the server, retrying. Edits made now are kept and sent when the connection is back.')
  }
})
provider.on('sync', (synced) => {
  if (synced && provider.wsconnected) showConnection('connected', 'Live')
})
provider.on('connection-error', () => {
  if (!provider.wsconnected) {
    showConnection('retrying', 'Retrying…')
    setText($('#offline-text'), 'Cannot reach the server, retrying. Edits made now are kept and sent when the connection is back.')
  }
})
provider.on('closed', ({ code, reason }) => { // 44xx: the server refused; retrying cannot help
  showConnection('refused', 'Refused')
  setText($('#offline-text'), `The server refused the connection (${code}${reason ? `: ${reason}` : ''}).`)
  if (code === 4401) askForToken('The server did not accept the token. Paste another one.')
})

// -- drawing ------------------------------------------------------------------------

let frame = 0
function scheduleRender () {
  if (!frame) frame = window.requestAnimationFrame(render)
}

function render () {
  frame = 0
  const view = ctx.view()
  const spec = view.spec || {}
  const title = spec.title || projectTitle || projectId
  setText($('#project-title'), title)
  document.title = `${title} · Blackboard`
  setText($('#project-logline'), spec.logline || '')
  board.render(view)
  renderTasks($('#tasks'), view.tasks)
  renderDna($('#dna'), ctx, view.dna_bank, view.artifacts)
  renderBudget($('#budget'), view.budget)
  const shots = Object.keys(view.shots || {}).length
  const tasks = Object.values(view.tasks || {})
  setText($('#stat-shots'), shots)
  setText($('#stat-running'), tasks.filter((t) => t && (t.status === 'running' || t.status === 'claimed')).length)
  setText($('#stat-failed'), tasks.filter((t) => t && t.status === 'failed').length)
  editor.render(view)
  $('#new-shot').disabled = !ctx.editable()
}

doc.on('update', () => {
  if (historyView === null) scheduleRender()
  refreshSoon()
})

let peopleOnline = 0
function showPresence () {
  peopleOnline = renderPresence($('#presence'), provider.awareness, doc.clientID).length
  setText($('#stat-online'), peopleOnline)
  showOtherConnections()
}
provider.awareness.on('change', showPresence)
showPresence()

let serverConnections = null
function showOtherConnections () {
  const others = serverConnections === null ? 0 : serverConnections - peopleOnline
  setText($('#presence-extra'), others > 0 ? `+ ${others} more connection${others > 1 ? 's' : ''} without a name (agents, tools)` : '')
}

setInterval(() => { // lease countdowns
  const now = Date.now()
  for (const cell of document.querySelectorAll('[data-expires]')) tickCountdown(cell, now)
}, 1000)

// -- what only the API knows: title, presence everywhere, corrections, history range ---

const base = `/api/projects/${encodeURIComponent(projectId)}`
const corrections = new PagedTail(`${base}/corrections`, token)

let polling = null // one poll at a time: the corrections tail must not read a page twice
let pollAgain = false
async function poll () {
  if (document.visibilityState !== 'visible') return
  if (polling) {
    pollAgain = true
    return
  }
  polling = Promise.allSettled([
    api(`${base}/presence`, token).then((p) => { serverConnections = p.connections; showOtherConnections() }),
    corrections.poll().then((grew) => { if (grew) renderCorrections($('#corrections'), corrections.items) }),
    scrubber.refreshLast()
  ])
  const results = await polling
  polling = null
  const refused = results.find((r) => r.status === 'rejected' && r.reason.status === 401)
  if (refused) return askForToken(refused.reason.message)
  if (pollAgain) {
    pollAgain = false
    poll()
  }
}

let refreshTimer = null
function refreshSoon () { // after live updates, a little later: repairs and the log tail
  if (!refreshTimer) refreshTimer = setTimeout(() => { refreshTimer = null; poll() }, 800)
}

async function start () {
  try {
    const project = await api(base, token)
    projectTitle = project.title
    await scrubber.bounds(project.seq)
  } catch (error) {
    if (error.status === 401) return askForToken(error.message)
    showProblem(error.status === 404 ? `There is no project “${projectId}”.` : `Could not load the project: ${error.message}`)
    return
  }
  scheduleRender()
  await poll()
  setInterval(poll, POLL_MS)
}

function showProblem (text) {
  $('#problem').hidden = false
  setText($('#problem-text'), text)
  provider.disconnect()
}

function askForToken (why) {
  provider.disconnect()
  showTokenGate(why)
}

wireTokenGate()

$('#new-shot').addEventListener('click', () => {
  if (ctx.editable()) editor.open(addShot(doc, ctx.view()))
})

$('#name').value = name
$('.name-field').hidden = Boolean(claims && claims.actor) // the token names this person
$('#name').addEventListener('change', () => {
  const chosen = $('#name').value.trim().slice(0, 64)
  if (!chosen) return
  rememberName(chosen)
  provider.awareness.setLocalStateField('user', { name: chosen, kind: 'person', color })
})

scheduleRender()
start()
