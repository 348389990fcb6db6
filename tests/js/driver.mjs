// Drives stock Yjs clients (yjs + y-websocket + ws) for the Python tests.
// One JSON command per stdin line, one JSON reply per stdout line:
//   {"id": 1, "cmd": "connect", "name": "a", "url": "ws://127.0.0.1:8000/sync", "room": "p1"}
//   -> {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": "..."}
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const clients = new Map()

function client (name) {
  const c = clients.get(name)
  if (!c) throw new Error(`no client ${name}`)
  return c
}

function docJson (doc) {
  const out = {}
  for (const root of ['spec', 'shots', 'dna_bank', 'tasks', 'artifacts', 'approvals', 'budget']) {
    out[root] = doc.getMap(root).toJSON()
  }
  return out
}

function toShared (value) {
  if (Array.isArray(value)) {
    const arr = new Y.Array()
    arr.push(value.map(toShared))
    return arr
  }
  if (value !== null && typeof value === 'object') {
    const map = new Y.Map()
    for (const [k, v] of Object.entries(value)) map.set(k, toShared(v))
    return map
  }
  return value
}

// JSON cannot carry NaN or ±Infinity: with `nonFinite`, these strings stand for them.
const NON_FINITE = { NaN, Infinity, '-Infinity': -Infinity }

function withNonFinite (value) {
  if (typeof value === 'string' && Object.hasOwn(NON_FINITE, value)) return NON_FINITE[value]
  if (Array.isArray(value)) return value.map(withNonFinite)
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withNonFinite(v)]))
  }
  return value
}

// Set doc[root][key1][key2]... = value, creating nested Maps on the way.
function setPath (doc, path, value, plain) {
  const [root, ...keys] = path
  let map = doc.getMap(root)
  doc.transact(() => {
    for (const key of keys.slice(0, -1)) {
      let next = map.get(key)
      if (!(next instanceof Y.Map)) {
        next = new Y.Map()
        map.set(key, next)
      }
      map = next
    }
    map.set(keys[keys.length - 1], plain ? value : toShared(value))
  })
}

function getPath (doc, path) {
  let value = docJson(doc)
  for (const key of path) value = value == null ? undefined : value[key]
  return value
}

// JSON with object keys sorted, so equal values compare equal whatever the key order.
function canonical (value) {
  return JSON.stringify(value, (_, v) => (v && typeof v === 'object' && !Array.isArray(v))
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
    : v)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitUntil (predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (predicate()) return
    await sleep(10)
  }
  throw new Error(`timed out waiting for ${what}`)
}

const commands = {
  async connect ({ name, url, room, params = {}, timeoutMs = 10000 }) {
    const doc = new Y.Doc()
    const closes = []
    let atSync = null // the document as the client first counts itself synced
    const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, params, disableBc: true })
    provider.on('connection-close', (event) => { if (event) closes.push({ code: event.code, reason: event.reason }) })
    provider.on('sync', (synced) => { if (synced && atSync === null) atSync = docJson(doc) })
    clients.set(name, { doc, provider, closes })
    await waitUntil(() => provider.synced || closes.length > 0, timeoutMs, `${name} to sync`)
    return { synced: provider.synced, closes, clientID: doc.clientID, atSync }
  },
  async set ({ name, path, value, plain = false, nonFinite = false }) {
    setPath(client(name).doc, path, nonFinite ? withNonFinite(value) : value, plain)
  },
  // Set several fields of the Map at `path` in one transaction (as one edit).
  async update ({ name, path, values }) {
    const doc = client(name).doc
    doc.transact(() => { for (const [key, value] of Object.entries(values)) setPath(doc, [...path, key], value) })
  },
  async delete ({ name, path }) {
    const [root, ...keys] = path
    const doc = client(name).doc
    let map = doc.getMap(root)
    for (const key of keys.slice(0, -1)) map = map.get(key)
    map.delete(keys[keys.length - 1])
  },
  async get ({ name, path = [] }) { return getPath(client(name).doc, path) },
  async waitFor ({ name, path, value, timeoutMs = 10000 }) {
    const want = canonical(value)
    let seen
    try {
      await waitUntil(() => (seen = canonical(getPath(client(name).doc, path))) === want, timeoutMs, 'value')
    } catch {
      throw new Error(`timed out waiting for ${path.join('/')} == ${want}; last seen ${seen}`)
    }
  },
  async setAwareness ({ name, state }) { client(name).provider.awareness.setLocalState(state) },
  async awareness ({ name }) {
    const { provider } = client(name)
    const out = {}
    for (const [id, state] of provider.awareness.getStates()) if (id !== provider.doc.clientID) out[id] = state
    return out
  },
  async disconnect ({ name }) { client(name).provider.disconnect() },
  async reconnect ({ name, timeoutMs = 10000 }) {
    const { provider } = client(name)
    provider.connect()
    await waitUntil(() => provider.synced && provider.wsconnected, timeoutMs, `${name} to resync`)
  },
  async closes ({ name }) { return client(name).closes },
  // The shared type (or JS type) at a path: 'YMap', 'YArray', 'YText', 'object', 'string'...
  async kind ({ name, path }) {
    const [root, ...keys] = path
    let value = client(name).doc.getMap(root)
    for (const key of keys) value = value instanceof Y.Map ? value.get(key) : undefined
    if (value instanceof Y.AbstractType) return value.constructor.name
    return value === null ? 'null' : typeof value
  },
  // Send raw bytes (base64) on the client's socket, as a broken client would.
  async sendRaw ({ name, base64 }) { client(name).provider.ws.send(Buffer.from(base64, 'base64')) },
  async state ({ name }) {
    const { provider } = client(name)
    return { synced: provider.synced, connected: provider.wsconnected }
  },
  async destroy ({ name }) {
    const c = clients.get(name)
    if (c) { c.provider.destroy(); clients.delete(name) }
  }
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  let msg
  try { msg = JSON.parse(line) } catch { return }
  try {
    const handler = commands[msg.cmd]
    if (!handler) throw new Error(`unknown command ${msg.cmd}`)
    const result = await handler(msg)
    process.stdout.write(JSON.stringify({ id: msg.id, ok: true, result: result ?? null }) + '\n')
  } catch (err) {
    process.stdout.write(JSON.stringify({ id: msg.id, ok: false, error: String(err && err.message) }) + '\n')
  }
})
rl.on('close', () => {
  for (const c of clients.values()) c.provider.destroy()
  process.exit(0)
})
