// The history scrubber: a slider over the seqs still retained; moving it shows the
// document as of that seq (GET …/state?at_seq=N), read-only, until "Back to live".

import { setText } from './dom.js'
import { timeAgo } from './format.js'
import { api } from './session.js'

const SCRUB_DEBOUNCE_MS = 200
const BOUNDS_EVERY_MS = 3000

export class HistoryScrubber {
  constructor (root, ctx, onView) {
    this.ctx = ctx
    this.onView = onView // (doc | null, seq): null means back to live
    this.slider = root.querySelector('#scrubber')
    this.label = root.querySelector('#history-label')
    this.note = root.querySelector('#history-note')
    this.live = root.querySelector('#history-live')
    this.base = `/api/projects/${encodeURIComponent(ctx.projectId)}`
    this.lastSeq = null
    this.viewing = null // the seq shown, or null when live
    this.boundsAt = 0
    this.request = 0 // only the newest answer is shown
    this.timer = null
    this.slider.addEventListener('input', () => {
      clearTimeout(this.timer)
      setText(this.label, `seq ${this.slider.value}`)
      this.timer = setTimeout(() => this.show(Number(this.slider.value)), SCRUB_DEBOUNCE_MS)
    })
    this.live.addEventListener('click', () => this.backToLive())
  }

  /** The retained range: the oldest log entry still kept, up to the last seq. */
  async bounds (lastSeq) {
    const first = await api(`${this.base}/history?limit=1`, this.ctx.token)
    const oldest = first.items.length ? first.items[0].seq : lastSeq
    this.setRange(oldest, lastSeq)
  }

  setRange (oldest, last) {
    const following = this.viewing === null
    this.slider.min = String(Math.max(0, Math.min(oldest, last)))
    this.slider.max = String(last)
    this.slider.disabled = oldest >= last
    this.lastSeq = last
    if (following) this.slider.value = String(last)
    setText(this.note, oldest >= last ? 'No earlier states retained yet.' : `seq ${oldest} … ${last} retained`)
  }

  /** The newest seq, learnt from the log's tail (cheap), at most every few seconds. */
  async refreshLast () {
    if (this.lastSeq === null || Date.now() - this.boundsAt < BOUNDS_EVERY_MS) return
    this.boundsAt = Date.now()
    let cursor = String(this.lastSeq)
    let last = this.lastSeq
    for (let i = 0; i < 10 && cursor; i++) {
      const page = await api(`${this.base}/history?limit=1000&cursor=${cursor}`, this.ctx.token)
      if (page.items.length) last = page.items[page.items.length - 1].seq
      cursor = page.next_cursor
    }
    if (last !== this.lastSeq) this.setRange(Number(this.slider.min), last)
  }

  async show (seq) {
    const request = ++this.request
    this.viewing = seq
    if (seq >= this.lastSeq) return this.backToLive()
    try {
      const [state, entry] = await Promise.all([
        api(`${this.base}/state?at_seq=${seq}`, this.ctx.token),
        api(`${this.base}/history?limit=1&cursor=${Math.max(0, seq - 1)}`, this.ctx.token)
      ])
      if (request !== this.request) return
      const item = entry.items[0]
      const when = item && item.seq === seq ? ` · ${item.actor} · ${timeAgo(item.created_at)}` : ''
      setText(this.label, `seq ${seq} of ${this.lastSeq}${when}`)
      this.live.hidden = false
      this.onView(state.doc, seq)
    } catch (error) {
      if (request !== this.request) return
      setText(this.label, `seq ${seq}: ${error.message}`)
    }
  }

  backToLive () {
    this.request++
    this.viewing = null
    clearTimeout(this.timer)
    if (this.lastSeq !== null) this.slider.value = String(this.lastSeq)
    setText(this.label, 'Live')
    this.live.hidden = true
    this.onView(null, null)
  }
}
