// The shot editor: a drawer over the page, bound to one shot's Y.Map. Typing writes to
// the shared document (every client sees it); others' edits show in the fields that
// are not being typed in.

import * as Y from 'yjs'
import { h, setText } from './dom.js'
import { seconds } from './format.js'
import { SHOT_STATUSES, artifactsByShot, thumbnail } from './board.js'

const TYPING_DEBOUNCE_MS = 150

export class ShotEditor {
  constructor (root, ctx) {
    this.root = root
    this.ctx = ctx
    this.shotId = null
    this.timers = new Map()
    this.fields = {
      title: root.querySelector('#edit-title'),
      status: root.querySelector('#edit-status'),
      assignee: root.querySelector('#edit-assignee'),
      notes: root.querySelector('#edit-notes')
    }
    for (const status of SHOT_STATUSES) this.fields.status.append(h('option', { value: status }, status))
    for (const [name, input] of Object.entries(this.fields)) {
      const event = input.tagName === 'SELECT' ? 'change' : 'input'
      input.addEventListener(event, () => this.edited(name, input))
      input.addEventListener('blur', () => this.flush(name))
    }
    root.querySelector('#edit-close').addEventListener('click', () => this.close())
    root.addEventListener('keydown', (event) => { if (event.key === 'Escape') this.close() })
  }

  open (shotId) {
    this.shotId = shotId
    this.root.hidden = false
    this.root.dataset.shotId = shotId
    for (const input of Object.values(this.fields)) input.value = '' // filled by render
    this.render(this.ctx.view())
    ;(this.ctx.editable() ? this.fields.title : this.root.querySelector('#edit-close')).focus()
  }

  close () {
    for (const name of this.timers.keys()) this.flush(name)
    this.shotId = null
    this.root.hidden = true
    delete this.root.dataset.shotId
  }

  edited (name, input) {
    clearTimeout(this.timers.get(name))
    this.timers.set(name, setTimeout(() => this.flush(name), name === 'status' ? 0 : TYPING_DEBOUNCE_MS))
    input.dataset.dirty = 'true'
  }

  /** Write a field's value into the shot's Y.Map now. */
  flush (name) {
    clearTimeout(this.timers.get(name))
    this.timers.delete(name)
    const input = this.fields[name]
    if (input.dataset.dirty !== 'true' || !this.ctx.editable()) return
    delete input.dataset.dirty
    const shot = this.ctx.doc.getMap('shots').get(this.shotId)
    if (!(shot instanceof Y.Map)) return // gone, or a plain entry the server is repairing
    if (shot.get(name) !== input.value) shot.set(name, input.value)
  }

  render (view) {
    if (this.shotId === null) return
    const shot = (view.shots || {})[this.shotId]
    const editable = this.ctx.editable()
    this.root.querySelector('#edit-gone').hidden = Boolean(shot)
    for (const [name, input] of Object.entries(this.fields)) {
      input.disabled = !editable || !shot
      // Never overwrite what someone is typing; everything else follows the document (a
      // select is written at once, so it follows even while focused: a repair shows).
      const typing = input.tagName !== 'SELECT' && document.activeElement === input
      if (shot && !typing && input.dataset.dirty !== 'true') {
        const value = typeof shot[name] === 'string' ? shot[name] : ''
        if (name === 'status' && value && !SHOT_STATUSES.includes(value) && !input.querySelector(`option[value="${CSS.escape(value)}"]`)) {
          input.append(h('option', { value }, value))
        }
        if (input.value !== value) input.value = value
      }
    }
    setText(this.root.querySelector('#edit-id'), this.shotId)
    const info = this.root.querySelector('#edit-info')
    const facts = shot ? [
      ['Scene', shot.scene], ['Order', shot.order], ['Duration', seconds(shot.duration_s)],
      ['Camera', shot.camera], ['Revision', shot.revision],
      ['Characters', Array.isArray(shot.characters) ? shot.characters.join(', ') : ''],
      ['Description', shot.description], ['Prompt', shot.prompt]
    ].filter(([, v]) => v !== undefined && v !== null && v !== '') : []
    const key = JSON.stringify(facts)
    if (info.dataset.shown !== key) {
      info.dataset.shown = key
      info.replaceChildren(...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]))
    }
    const gallery = this.root.querySelector('#edit-artifacts')
    const artifacts = artifactsByShot(view).get(this.shotId) || []
    const shown = artifacts.map((a) => a.id).join('|')
    if (gallery.dataset.shown !== shown) {
      gallery.dataset.shown = shown
      gallery.replaceChildren(...(artifacts.length
        ? artifacts.map((a) => thumbnail(this.ctx, a, 'large'))
        : [h('p', { class: 'muted' }, 'No artifacts yet.')]))
    }
  }
}

/** A new shot at the end of the board, as a nested Y.Map (never a plain object). */
export function addShot (doc, view) {
  const orders = Object.values(view.shots || {}).map((s) => s && s.order).filter((o) => typeof o === 'number')
  const id = `shot-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`
  doc.transact(() => {
    const shot = new Y.Map()
    doc.getMap('shots').set(id, shot)
    shot.set('title', 'New shot')
    shot.set('status', 'draft')
    shot.set('order', orders.length ? Math.max(...orders) + 1 : 1)
  })
  return id
}
