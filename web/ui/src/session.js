// The caller's token for this browser tab, its claims (for display only: the server
// enforces them), and the API calls that carry it.

const TOKEN_KEY = 'blackboard.token'
const NAME_KEY = 'blackboard.name'

/** The token from `?token=` (kept in sessionStorage, then taken out of the address bar)
 * or from earlier in this tab's session; null when none was given. */
export function sessionToken () {
  const url = new URL(window.location.href)
  const given = url.searchParams.get('token')
  if (given) {
    window.sessionStorage.setItem(TOKEN_KEY, given)
    url.searchParams.delete('token')
    window.history.replaceState(null, '', url)
  }
  return window.sessionStorage.getItem(TOKEN_KEY)
}

/** The token form (`#gate`, on both pages): shown with why a token is needed; the token
 * submitted is kept for the tab (none: forgotten) and the page loads again with it. */
export function showTokenGate (why) {
  document.querySelector('#gate').hidden = false
  document.querySelector('#gate-why').textContent = why
  document.querySelector('#gate-token').focus()
}

export function wireTokenGate () {
  document.querySelector('#gate').addEventListener('submit', (event) => {
    event.preventDefault()
    const given = document.querySelector('#gate-token').value.trim()
    if (given) window.sessionStorage.setItem(TOKEN_KEY, given)
    else window.sessionStorage.removeItem(TOKEN_KEY)
    window.location.reload()
  })
}

/** `{project, role, actor, exp}` read from the token's middle part, or null. */
export function claimsOf (token) {
  if (!token) return null
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    const claims = JSON.parse(window.atob(part.padEnd(part.length + (4 - part.length % 4) % 4, '=')))
    return typeof claims === 'object' && claims !== null ? claims : null
  } catch {
    return null
  }
}

/** The name this page shows others: the token's actor, else one the person chose. */
export function displayName (claims) {
  if (claims && typeof claims.actor === 'string') return claims.actor
  let name = window.localStorage.getItem(NAME_KEY)
  if (!name) {
    name = `guest-${Math.random().toString(36).slice(2, 6)}`
    window.localStorage.setItem(NAME_KEY, name)
  }
  return name
}

export function rememberName (name) {
  window.localStorage.setItem(NAME_KEY, name)
}

export class ApiFailure extends Error {
  constructor (status, code, detail) {
    super(detail || code || `HTTP ${status}`)
    this.status = status
    this.code = code
  }
}

const API_TIMEOUT_MS = 10000

/** GET an API path as JSON with the token; ApiFailure on an error answer or a timeout. */
export async function api (path, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {}
  let response
  try {
    response = await fetch(path, { headers, signal: AbortSignal.timeout(API_TIMEOUT_MS) })
  } catch (error) {
    throw new ApiFailure(0, 'unreachable', `the server did not answer (${error.name})`)
  }
  let body = null
  try {
    body = await response.json()
  } catch {
    body = null
  }
  if (!response.ok) {
    throw new ApiFailure(response.status, body && body.error, body && body.detail)
  }
  return body
}

/** A URL a plain element (an <img>) can load: the token goes in the query. */
export function withToken (path, token) {
  return token ? `${path}?token=${encodeURIComponent(token)}` : path
}
