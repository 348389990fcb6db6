// Following the API's paged lists (`{items, next_cursor}`, oldest first) as they grow.

import { api } from './session.js'

const PAGE = 200
const MAX_PAGES_PER_POLL = 20 // a long backlog is read over several polls, not at once

/**
 * The items of a list, read once and then polled for what was appended. A last page has
 * no next cursor to resume from, so the tail re-reads from the cursor that led to that
 * page and keeps what is past the items it already has.
 */
export class PagedTail {
  constructor (path, token, maxItems = 1000) {
    this.path = path
    this.token = token
    this.maxItems = maxItems
    this.items = []
    this.pageCursor = '' // where the last page starts
    this.pageCount = 0 // items of the last page already taken
  }

  async poll () {
    let grew = false
    for (let i = 0; i < MAX_PAGES_PER_POLL; i++) {
      const query = `?limit=${PAGE}${this.pageCursor ? `&cursor=${encodeURIComponent(this.pageCursor)}` : ''}`
      const page = await api(`${this.path}${query}`, this.token)
      const fresh = page.items.slice(this.pageCount)
      if (fresh.length) {
        grew = true
        this.items.push(...fresh)
        if (this.items.length > this.maxItems) this.items.splice(0, this.items.length - this.maxItems)
      }
      if (!page.next_cursor) {
        this.pageCount = page.items.length
        break
      }
      this.pageCursor = page.next_cursor
      this.pageCount = 0
    }
    return grew
  }
}
