// Builds the dashboard's page into dist/web: one JavaScript bundle (Preact and our code,
// minified by esbuild), the HTML and the CSS, each with a gzip copy the controller serves to
// browsers that accept it. Run by ./dev setup; prints the sizes. Nothing is fetched at run time.
import * as esbuild from 'esbuild';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, '../dist/web');
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });

await esbuild.build({
  entryPoints: [path.join(here, 'src/main.tsx')],
  outfile: path.join(out, 'app.js'),
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  platform: 'browser',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'none',
  logLevel: 'warning',
});
fs.copyFileSync(path.join(here, 'index.html'), path.join(out, 'index.html'));
fs.copyFileSync(path.join(here, 'style.css'), path.join(out, 'app.css'));

const sizes: string[] = [];
for (const f of fs.readdirSync(out)) {
  const body = fs.readFileSync(path.join(out, f));
  const gz = zlib.gzipSync(body, { level: 9 });
  fs.writeFileSync(path.join(out, `${f}.gz`), gz);
  sizes.push(`${f} ${(body.length / 1024).toFixed(1)} KiB (gzip ${(gz.length / 1024).toFixed(1)} KiB)`);
}
process.stderr.write(`dashboard assets in ${path.relative(process.cwd(), out) || out}: ${sizes.join(', ')}\n`);
