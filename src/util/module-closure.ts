/**
 * The modules a program loads, found from its sources, so a copy of it (the CNI plugin installed
 * on the host, cni-install.ts) carries every module it imports and no list has to be kept by hand:
 * a hand-kept list missed a new import twice and the copied plugin failed with ERR_MODULE_NOT_FOUND.
 */
import fs from 'node:fs';
import path from 'node:path';

/**
 * The specifiers a module's source imports at run time: static imports, re-exports, side-effect
 * imports and `import()` of a string literal, in TypeScript or in tsc's output. `import type` and
 * `export type` are erased and not included. Only statements that start a line are read, so an
 * import quoted in a comment or a string is not taken for one.
 */
export function runtimeImports(source: string): string[] {
  const found: string[] = [];
  for (const m of source.matchAll(/^[ \t]*(?:import|export)[ \t]+(?!type\b)(?:[^;'"`]*?\sfrom[ \t]*)?(['"])([^'"\n]+)\1/gm)) found.push(m[2]!);
  for (const m of source.matchAll(/\bimport\(\s*(['"])([^'"\n]+)\1\s*\)/g)) found.push(m[2]!);
  return [...new Set(found)];
}

/**
 * Every module `entry` loads, itself first: paths relative to `root` without the extension `ext`
 * ('.ts' from the sources, '.js' compiled). `node:` builtins are the runtime's; a package import
 * or a module that is not there is an error, since the copy has no node_modules.
 */
export function moduleClosure(root: string, entry: string, ext: string, read: (file: string) => string = (f) => fs.readFileSync(f, 'utf8')): string[] {
  /** Each module found, with the module that imports it (the entry: none). */
  const importer = new Map<string, string | undefined>([[entry, undefined]]);
  const queue = [entry];
  for (const mod of queue) {
    let source: string;
    try {
      source = read(path.join(root, mod + ext));
    } catch (err) {
      const by = importer.get(mod);
      throw new Error(`the module ${mod}${ext}${by ? ` (imported by ${by}${ext})` : ''} is missing under ${root}: ${(err as Error).message}; build the package again (npx tsc -p tsconfig.build.json)`);
    }
    for (const spec of runtimeImports(source)) {
      if (spec.startsWith('node:')) continue;
      if (!spec.startsWith('.')) throw new Error(`${mod}${ext} imports the package '${spec}', which a copy without node_modules cannot load; import it where only the agent runs`);
      const dep = path.relative(root, path.resolve(path.dirname(path.join(root, mod)), spec)).replace(/\.[cm]?[jt]s$/, '');
      if (dep.startsWith('..')) throw new Error(`${mod}${ext} imports ${spec}, outside ${root}`);
      if (!importer.has(dep)) {
        importer.set(dep, mod);
        queue.push(dep);
      }
    }
  }
  return queue;
}
