// The shot board: one column per shot status, a card per shot.

import { h, setAttr, setText, syncList } from './dom.js'
import { seconds } from './format.js'
import { withToken } from './session.js'

export const SHOT_STATUSES = ['draft', 'planned', 'generating', 'review', 'rejected', 'approved']
const OTHER = 'other' // a status outside the lattice (the shape is open): still shown
const MAX_THUMBS = 4

/** The shots of a document view, in board order (`order`, then id). */
export function shotsOf (doc) {
  return Object.entries(doc.shots || {})
    .filter(([, shot]) => shot && typeof shot === 'object' && !Array.isArray(shot))
    .map(([id, shot]) => ({ id, ...shot }))
    .sort((a, b) => (num(a.order) - num(b.order)) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : Number.MAX_SAFE_INTEGER)

/** Each shot's artifacts: entries naming it by `shot_id`, then ids in its `artifact_ids`. */
export function artifactsByShot (doc) {
  const artifacts = doc.artifacts || {}
  const found = new Map()
  const add = (shotId, id) => {
    if (!found.has(shotId)) found.set(shotId, [])
    const list = found.get(shotId)
    if (!list.some((a) => a.id === id)) list.push({ id, ...(artifacts[id] || {}) })
  }
  for (const [id, artifact] of Object.entries(artifacts)) {
    if (artifact && typeof artifact.shot_id === 'string') add(artifact.shot_id, id)
  }
  for (const [shotId, shot] of Object.entries(doc.shots || {})) {
    if (shot && Array.isArray(shot.artifact_ids)) {
      for (const id of shot.artifact_ids) if (typeof id === 'string') add(shotId, id)
    }
  }
  return found
}

/** A thumbnail for an artifact: the image itself, or a tile naming its type. */
export function thumbnail (ctx, artifact, size = 'small') {
  const type = typeof artifact.content_type === 'string' ? artifact.content_type : ''
  const title = [artifact.id, type, artifact.model].filter(Boolean).join(' · ')
  if (type.startsWith('image/')) {
    const src = withToken(`/api/projects/${encodeURIComponent(ctx.projectId)}/artifacts/${encodeURIComponent(artifact.id)}`, ctx.token)
    const img = h('img', { class: `thumb thumb-${size}`, src, alt: title, title, loading: 'lazy', decoding: 'async' })
    img.addEventListener('error', () => img.replaceWith(tile(type, title, size, true)), { once: true })
    return img
  }
  return tile(type, title, size, false)
}

function tile (type, title, size, missing) {
  const label = missing ? 'missing' : (type.split('/')[1] || type || 'file').slice(0, 8)
  return h('span', { class: `thumb thumb-${size} thumb-tile${missing ? ' thumb-missing' : ''}`, title }, label)
}

export class Board {
  constructor (root, ctx, onOpen) {
    this.ctx = ctx
    this.columns = new Map()
    this.onOpen = onOpen
    for (const status of [...SHOT_STATUSES, OTHER]) {
      const count = h('span', { class: 'count' }, '0')
      const cards = h('div', { class: 'cards' })
      const empty = h('p', { class: 'empty' }, 'No shots')
      const column = h('section', { class: `column status-${status}`, 'data-status': status },
        h('header', { class: 'column-head' }, h('span', { class: 'dot' }), h('h3', {}, status), count),
        cards, empty)
      this.columns.set(status, { column, cards, count, empty })
      root.append(column)
    }
  }

  render (doc) {
    const artifacts = artifactsByShot(doc)
    const byStatus = new Map([...this.columns.keys()].map((s) => [s, []]))
    for (const shot of shotsOf(doc)) {
      const status = SHOT_STATUSES.includes(shot.status) ? shot.status : (shot.status ? OTHER : 'draft')
      byStatus.get(status).push(shot)
    }
    for (const [status, shots] of byStatus) {
      const { column, cards, count, empty } = this.columns.get(status)
      setText(count, shots.length)
      empty.hidden = shots.length > 0
      if (status === OTHER) column.hidden = shots.length === 0
      syncList(cards, shots, (s) => s.id, (s) => this.card(s), (el, s) => this.update(el, s, artifacts.get(s.id) || []))
    }
  }

  card (shot) {
    const el = h('article', { class: 'card', 'data-shot-id': shot.id, tabindex: '0', role: 'button' },
      h('div', { class: 'card-top' }, h('span', { class: 'scene' }), h('span', { class: 'shot-id' }, shot.id)),
      h('h4', { class: 'card-title' }),
      h('div', { class: 'thumbs' }),
      h('div', { class: 'card-meta' }, h('span', { class: 'duration' }), h('span', { class: 'assignee' })))
    const open = () => this.onOpen(el.dataset.shotId)
    el.addEventListener('click', open)
    el.addEventListener('keydown', (event) => { if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); open() } })
    return el
  }

  update (el, shot, artifacts) {
    const title = el.querySelector('.card-title')
    setText(title, shot.title || 'Untitled shot')
    title.classList.toggle('untitled', !shot.title)
    setText(el.querySelector('.scene'), shot.scene ? `Scene ${shot.scene}` : 'No scene')
    setText(el.querySelector('.duration'), seconds(shot.duration_s))
    setText(el.querySelector('.assignee'), shot.assignee ? `@${shot.assignee}` : '')
    setAttr(el, 'title', shot.notes ? `Notes: ${shot.notes}` : null)
    const thumbs = el.querySelector('.thumbs')
    const shown = artifacts.slice(0, MAX_THUMBS)
    const key = shown.map((a) => `${a.id}:${a.content_type || ''}`).join('|') + `+${artifacts.length}`
    if (thumbs.dataset.shown !== key) { // rebuilt only when the artifacts change
      thumbs.dataset.shown = key
      thumbs.replaceChildren(...shown.map((a) => thumbnail(this.ctx, a)))
      if (artifacts.length > MAX_THUMBS) thumbs.append(h('span', { class: 'thumb thumb-small thumb-more' }, `+${artifacts.length - MAX_THUMBS}`))
      thumbs.hidden = artifacts.length === 0
    }
  }
}
