// Small DOM helpers: build elements, and update them in place so live changes never
// rebuild (and so never move) what is already on screen.

export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue
    if (name === 'class') el.className = value
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value)
    else el.setAttribute(name, value === true ? '' : value)
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue
    el.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return el
}

/** Set text only when it differs (no needless reflow, selection kept). */
export function setText (el, value) {
  const text = value === undefined || value === null ? '' : String(value)
  if (el.textContent !== text) el.textContent = text
}

export function setAttr (el, name, value) {
  if (value === undefined || value === null || value === false) {
    if (el.hasAttribute(name)) el.removeAttribute(name)
  } else {
    const text = value === true ? '' : String(value)
    if (el.getAttribute(name) !== text) el.setAttribute(name, text)
  }
}

/**
 * Make `parent`'s children show `items` in order, keyed by `keyOf`: an element is made
 * once per key by `create`, refreshed by `update`, moved only when out of place, and
 * removed when its item is gone. Elements not made here (e.g. an "empty" line) go first.
 */
export function syncList (parent, items, keyOf, create, update) {
  const existing = new Map()
  for (const child of parent.children) {
    if (child.dataset.key !== undefined) existing.set(child.dataset.key, child)
  }
  let anchor = null // the element the next item must follow
  const firstKeyed = () => [...parent.children].find((c) => c.dataset.key !== undefined) || null
  for (const item of items) {
    const key = String(keyOf(item))
    let el = existing.get(key)
    if (el) {
      existing.delete(key)
    } else {
      el = create(item)
      el.dataset.key = key
    }
    update(el, item)
    const wanted = anchor ? anchor.nextElementSibling : firstKeyed()
    if (el !== wanted) parent.insertBefore(el, anchor ? anchor.nextSibling : wanted)
    anchor = el
  }
  for (const el of existing.values()) el.remove()
}
