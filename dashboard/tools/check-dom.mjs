// Static check of the security rules: no HTML parsing from strings, no inline script or inline
// event handlers, no eval. Scans the sources (src/, public/, index.html) and, with --dist, the
// built pages in dist/. Exits 1 with the offending lines.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(import.meta.url), '..', '..');
const dist = process.argv.includes('--dist');

const CODE_RULES = [
  [/\binnerHTML\b/, 'innerHTML'],
  [/\bouterHTML\b/, 'outerHTML'],
  [/\binsertAdjacentHTML\b/, 'insertAdjacentHTML'],
  [/\bdocument\s*\.\s*write(ln)?\b/, 'document.write'],
  [/\bcreateContextualFragment\b/, 'createContextualFragment'],
  [/\bDOMParser\b/, 'DOMParser'],
  [/\bsrcdoc\b/, 'srcdoc'],
  [/(^|[^.\w])eval\s*\(/, 'eval'],
  [/\bnew\s+Function\s*\(/, 'new Function'],
  [/setAttribute\(\s*['"]on/i, 'an inline event handler attribute'],
  [/\bsetTimeout\(\s*['"`]/, 'setTimeout with a string'],
];
const HTML_RULES = [
  [/<script(?![^>]*\bsrc=)[^>]*>/i, 'an inline <script>'],
  [/\son[a-z]+\s*=/i, 'an inline event handler'],
  [/javascript:/i, 'a javascript: URL'],
];

function walk(dir, out = []) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

const files = dist
  ? walk(join(root, 'dist')).filter((f) => f.endsWith('.html'))
  : [...walk(join(root, 'src')), ...walk(join(root, 'public')), join(root, 'index.html')];

const problems = [];
for (const file of files) {
  const rules = file.endsWith('.html') ? HTML_RULES : /\.(ts|js|mjs)$/.test(file) ? CODE_RULES : null;
  if (!rules) continue;
  readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, '');
      for (const [re, what] of rules) {
        if (re.test(code)) problems.push(`${relative(root, file)}:${i + 1}: ${what}: ${line.trim()}`);
      }
    });
}
if (problems.length) {
  console.error(`check-dom: ${problems.length} problem(s):\n${problems.join('\n')}`);
  process.exit(1);
}
console.log(`check-dom: ${files.length} files checked${dist ? ' (dist)' : ''}, no unsafe DOM use`);
