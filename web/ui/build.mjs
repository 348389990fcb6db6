// Builds the dashboard into ../static/ (served at /ui/assets/, shipped in the wheel).
// Deterministic: no timestamps, no source maps with absolute paths; `make ui` runs it.
import { build } from 'esbuild'
import { copyFile, mkdir, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'static')

await rm(out, { recursive: true, force: true }) // no stale asset outlives its source
await mkdir(out, { recursive: true })
await build({
  entryPoints: [join(here, 'src', 'list.js'), join(here, 'src', 'project.js'), join(here, 'src', 'styles.css')],
  outdir: out,
  bundle: true,
  format: 'esm',
  target: ['es2020'],
  minify: true,
  legalComments: 'none',
  logLevel: 'warning'
})
for (const page of ['index.html', 'project.html']) {
  await copyFile(join(here, 'src', page), join(out, page))
}
