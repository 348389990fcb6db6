// How numbers, money and times read on the page.

export function money (amount, currency) {
  if (typeof amount !== 'number' || !Number.isFinite(amount)) return '—'
  try {
    return new Intl.NumberFormat(undefined, {
      style: 'currency',
      currency: currency || 'USD',
      maximumFractionDigits: 0
    }).format(amount)
  } catch { // an unknown currency code: plain number and the code
    return `${Math.round(amount).toLocaleString()} ${currency || ''}`.trim()
  }
}

export function seconds (value) {
  return typeof value === 'number' && Number.isFinite(value) ? `${+value.toFixed(1)} s` : ''
}

/** "in 42 s", "in 3 min", "expired 5 s ago" for an ISO time. */
export function countdown (iso, now = Date.now()) {
  const at = Date.parse(iso)
  if (Number.isNaN(at)) return ''
  const left = Math.round((at - now) / 1000)
  const span = (s) => (s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`)
  return left >= 0 ? `in ${span(left)}` : `expired ${span(-left)} ago`
}

export function timeAgo (iso, now = Date.now()) {
  const at = Date.parse(iso)
  if (Number.isNaN(at)) return ''
  const s = Math.max(0, Math.round((now - at) / 1000))
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  if (s < 86400) return `${Math.round(s / 3600)} h ago`
  return new Date(at).toLocaleDateString()
}

/** A short readable form of any JSON value (corrections' before/after). */
export function brief (value) {
  if (value === undefined) return '—'
  const text = JSON.stringify(value)
  return text.length > 60 ? `${text.slice(0, 57)}…` : text
}
