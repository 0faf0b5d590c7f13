/**
 * Where the package's native addons live: build/Release/<name>.node at the repository root, built
 * by `npm install` (node-gyp, binding.gyp). Three levels up from the compiled dist/src/<dir>/, two
 * when a file runs from src/<dir>/ directly.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function addonCandidates(name: string): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const relative = join('build', 'Release', `${name}.node`);
  return [join(here, '..', '..', '..', relative), join(here, '..', '..', relative)];
}

/** The addon's path, or undefined when it was not built. */
export function findAddon(name: string): string | undefined {
  return addonCandidates(name).find((candidate) => existsSync(candidate));
}

export function loadAddon<T>(path: string): T {
  return createRequire(import.meta.url)(path) as T;
}
