/**
 * Object names (volumes, pools, nodes…): a letter first, then letters, digits, '.', '_' or '-',
 * at most 64 characters. Names never look like ids (all digits), so "{id}" in a path can be
 * either, and no name can carry quotes, spaces, slashes or control characters anywhere.
 */
import { z } from 'zod';

export const NAME_LENGTH_MAX = 64;
export const NAME_PATTERN = /^[A-Za-z][A-Za-z0-9._-]{0,63}$/;

export const nameSchema = z
  .string()
  .max(NAME_LENGTH_MAX, `must be at most ${NAME_LENGTH_MAX} characters`)
  .regex(NAME_PATTERN, 'must start with a letter and contain only letters, digits, ".", "_" or "-"');

/** A reference to an object: its numeric id or its name. */
export const refSchema = z.union([z.number().int().positive().max(2 ** 31 - 1), nameSchema]);
export type Ref = z.infer<typeof refSchema>;

/** Path parameters arrive as strings: all digits means an id. */
export function parseRef(text: string): Ref | undefined {
  if (/^[1-9][0-9]{0,9}$/.test(text)) {
    const id = Number(text);
    return id <= 2 ** 31 - 1 ? id : undefined;
  }
  return NAME_PATTERN.test(text) ? text : undefined;
}
