// Writes build-info.json next to the build: a hash of the sources the build was made from,
// and a hash of each built file. tests/unit/test_ui_static.py recomputes both, so a commit
// whose sources changed without a rebuild (or whose build was edited by hand) fails CI.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const uiDir = fileURLToPath(new URL('..', import.meta.url));
const outDir = join(uiDir, '..', 'src', 'labs_api', 'ui', 'static');
// Keep in step with SOURCE_ENTRIES in src/labs_api/ui/build_info.py.
const SOURCE_ENTRIES = ['index.html', 'package.json', 'package-lock.json', 'vite.config.js',
  'scripts', 'src'];

function walk(path) {
  if (!existsSync(path)) return [];
  if (statSync(path).isDirectory()) {
    return readdirSync(path).flatMap((name) => walk(join(path, name)));
  }
  return [path];
}

function digest(base, paths) {
  const lines = paths
    .map((p) => relative(base, p).split(sep).join('/'))
    .sort()
    .map((rel) => `${rel}\0${createHash('sha256').update(readFileSync(join(base, rel))).digest('hex')}\n`);
  return createHash('sha256').update(lines.join('')).digest('hex');
}

const sources = SOURCE_ENTRIES.flatMap((entry) => walk(join(uiDir, entry)));
const built = walk(outDir).filter((p) => !p.endsWith('build-info.json'));
const files = Object.fromEntries(
  built.map((p) => [relative(outDir, p).split(sep).join('/'),
    createHash('sha256').update(readFileSync(p)).digest('hex')]).sort(),
);
const info = { sources_sha256: digest(uiDir, sources), files };
writeFileSync(join(outDir, 'build-info.json'), JSON.stringify(info, null, 2) + '\n');
console.log(`build-info.json: sources ${info.sources_sha256.slice(0, 12)}, ${built.length} files`);
