// The one DOM helper the page's modules share.

/** `el("a", {href, text: "label"}, ...children)`: an element with attributes (true: present,
 *  false/null/undefined: left out), `text` as its text content, then the children. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v === true ? "" : v);
  }
  e.append(...children);
  return e;
}
