// The project list: title, seq, budget available and who is connected, per project.

import { h, setText } from './dom.js'
import { money } from './format.js'
import { api, claimsOf, sessionToken, showTokenGate, wireTokenGate } from './session.js'

const PAGE = 50
const $ = (selector) => document.querySelector(selector)
const token = sessionToken()
const claims = claimsOf(token)
let cursor = ''

if (claims && typeof claims.role === 'string') {
  $('#role-badge').hidden = false
  setText($('#role-badge'), `${claims.actor} · ${claims.role}`)
}

async function loadPage () {
  $('#more').hidden = true
  let page
  try {
    page = await api(`/api/projects?limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, token)
  } catch (error) {
    if (error.status === 401) return askForToken(error.message)
    if (error.status === 403 && claims && claims.project && claims.project !== '*') {
      // A token for one project cannot list them all: go to the one it opens.
      window.location.assign(`/ui/projects/${encodeURIComponent(claims.project)}`)
      return
    }
    setText($('#status'), `Could not list the projects: ${error.message}`)
    return
  }
  const grid = $('#projects')
  for (const project of page.items) grid.append(projectCard(project))
  setText($('#status'), grid.children.length ? '' : 'No projects yet. Create one with `blackboard create PROJECT --title T --budget N`.')
  $('#status').hidden = grid.children.length > 0
  cursor = page.next_cursor
  $('#more').hidden = !cursor
}

function projectCard (project) {
  const base = `/api/projects/${encodeURIComponent(project.project_id)}`
  const available = h('span', { class: 'stat' }, '…')
  const online = h('span', { class: 'stat' }, '…')
  const card = h('a', { class: 'panel project-card', href: `/ui/projects/${encodeURIComponent(project.project_id)}`, 'data-project-id': project.project_id },
    h('h2', {}, project.title || project.project_id),
    h('p', { class: 'mono muted small' }, `${project.project_id} · seq ${project.seq}`),
    h('div', { class: 'project-figures' },
      h('div', {}, available, h('span', { class: 'muted' }, 'available')),
      h('div', {}, online, h('span', { class: 'muted' }, 'connected'))))
  api(`${base}/budget`, token)
    .then((b) => { setText(available, money(b.available, b.currency)); card.dataset.budgetAvailable = b.available })
    .catch(() => setText(available, '—'))
  api(`${base}/presence`, token)
    .then((p) => setText(online, describe(p)))
    .catch(() => setText(online, '—'))
  return card
}

/** "2 people, 1 agent" from the awareness states of every instance's clients. */
function describe (presence) {
  let people = 0
  let agents = 0
  for (const instance of presence.instances || []) {
    for (const client of instance.clients || []) {
      const user = client.state && client.state.user
      if (user && user.kind === 'agent') agents++
      else if (user) people++
    }
  }
  const unnamed = Math.max(0, presence.connections - people - agents)
  const parts = []
  if (people) parts.push(`${people} ${people === 1 ? 'person' : 'people'}`)
  if (agents) parts.push(`${agents} agent${agents === 1 ? '' : 's'}`)
  if (unnamed) parts.push(`${unnamed} other`)
  return parts.length ? parts.join(', ') : 'nobody'
}

function askForToken (why) {
  setText($('#status'), '')
  showTokenGate(why)
}

wireTokenGate()
$('#more').addEventListener('click', loadPage)
loadPage()
