// The only way this app builds DOM: elements from a tag name, attributes set one by one, and
// children that are nodes or plain text (text nodes, never parsed as markup). Everything shown
// comes from the server and is untrusted; nothing here ever parses a string as HTML or SVG.

export type Child = Node | string | number | null | undefined | false;
export type Attrs = Record<string, string | number | boolean | null | undefined>;

const SVG_NS = 'http://www.w3.org/2000/svg';

function setAttrs(el: Element, attrs: Attrs | undefined): void {
  if (!attrs) return;
  for (const [name, value] of Object.entries(attrs)) {
    // Handlers are attached with on(); an "on…" attribute would be inline script.
    if (/^on/i.test(name)) throw new Error(`event handler attribute ${name} is not allowed`);
    if (value === null || value === undefined || value === false) continue;
    if (name === 'href' && !/^(\/|#|\.\/)/.test(String(value))) {
      throw new Error('only same-site links are allowed');
    }
    el.setAttribute(name, value === true ? '' : String(value));
  }
}

function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

/** An HTML element: h('td', {class: 'x'}, 'text', child). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, created in the SVG namespace. */
export function s<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs?: Attrs,
  ...children: Child[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Adds an event listener and returns the element, for chaining inside h(). */
export function on<E extends EventTarget>(el: E, type: string, fn: (ev: Event) => void): E {
  el.addEventListener(type, fn);
  return el;
}

/** Replaces every child of el. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}
