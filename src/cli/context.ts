/** What every admin command needs: output options and an MDM client, from the global flags. */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { mdmClient } from './mdm-client.js';
import type { HttpClient } from '../common/http-client.js';
import type { OutputOptions } from './output.js';
import { parseSizeBytes, GiB } from '../common/units.js';

export interface GlobalOptions {
  mdm?: string;
  token?: string;
  tokenFile?: string;
  json: boolean;
  timeoutMs: number;
}

export interface CommandContext {
  readonly client: HttpClient;
  readonly output: OutputOptions;
}

export function contextOf(command: Command): CommandContext {
  const options = command.optsWithGlobals() as GlobalOptions;
  return {
    client: mdmClient({
      ...(options.mdm !== undefined ? { mdm: options.mdm } : {}),
      ...(options.token !== undefined ? { token: options.token } : {}),
      ...(options.tokenFile !== undefined ? { tokenFile: options.tokenFile } : {}),
      timeoutMs: options.timeoutMs,
    }),
    output: { json: jsonRequested(command) },
  };
}

/** --json given before the subcommand (global) or after it (every leaf command takes it). */
function jsonRequested(command: Command): boolean {
  for (let current: Command | null = command; current !== null; current = current.parent) {
    if (current.opts().json === true) return true;
  }
  return false;
}

/** "800MiB", "1.5GiB", "4096B"; a bare number is GiB, like the seed's size_gb. */
export function parseSizeArgument(text: string): number {
  const bare = /^\s*\d+(\.\d+)?\s*$/.test(text);
  const bytes = bare ? Math.round(Number(text) * GiB) : parseSizeBytes(text);
  if (bytes === undefined || bytes <= 0 || !Number.isSafeInteger(bytes)) {
    throw new InvalidArgumentError(`"${text}" is not a size; write e.g. 800MiB, 8GiB or 1TiB`);
  }
  return bytes;
}

export function parseIntegerArgument(min: number, max: number) {
  return (text: string): number => {
    if (!/^-?\d+$/.test(text.trim())) throw new InvalidArgumentError(`"${text}" is not an integer`);
    const value = Number(text);
    if (value < min || value > max) throw new InvalidArgumentError(`must be between ${min} and ${max}`);
    return value;
  };
}

/** Ids stay numbers, names stay strings, so the MDM resolves either. */
export function ref(text: string): string | number {
  return /^[1-9][0-9]{0,9}$/.test(text) ? Number(text) : text;
}

export function pathRef(text: string): string {
  return encodeURIComponent(text);
}
