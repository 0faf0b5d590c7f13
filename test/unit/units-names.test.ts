/**
 * Sizes as people type them (src/common/units.ts) and object names / references
 * (src/common/names.ts).
 */
import t from 'tap';
import fc from 'fast-check';
import { GiB, KiB, MiB, TiB, formatBytes, parseSizeBytes } from '../../src/common/units.js';
import { NAME_LENGTH_MAX, nameSchema, parseRef, refSchema } from '../../src/common/names.js';

const SEED = 0x0b17e5;

// ---------------------------------------------------------------- parseSizeBytes

t.test('parseSizeBytes: units', async (t) => {
  const cases: [string, number][] = [
    ['4096', 4096],
    ['0', 0],
    ['4MiB', 4 * MiB],
    ['4mib', 4 * MiB],
    ['4MIB', 4 * MiB],
    ['4m', 4 * MiB],
    ['4M', 4 * MiB],
    ['1.5g', 1.5 * GiB],
    ['1.5GiB', 1.5 * GiB],
    ['2T', 2 * TiB],
    ['2TiB', 2 * TiB],
    ['1k', KiB],
    ['1KiB', KiB],
    ['1kb', 1000],
    ['500MB', 500e6],
    ['500mb', 500e6],
    ['3GB', 3e9],
    ['2TB', 2e12],
    ['512b', 512],
    ['512B', 512],
    [' 4 KiB ', 4 * KiB],
    ['4\tGiB', 4 * GiB],
    ['0.5KiB', 512],
    ['8191TiB', 8191 * TiB],
  ];
  for (const [text, bytes] of cases) t.equal(parseSizeBytes(text), bytes, JSON.stringify(text));
});

t.test('parseSizeBytes: results are whole bytes', async (t) => {
  t.equal(parseSizeBytes('1.5'), 2, 'fractional bytes round');
  t.equal(parseSizeBytes('0.001k'), 1, '1.024 bytes rounds to 1');
  t.ok(Number.isInteger(parseSizeBytes('1.1MiB')), '1.1 MiB is an integer number of bytes');
});

t.test('parseSizeBytes: not a size -> undefined', async (t) => {
  const garbage = [
    '',
    ' ',
    'abc',
    'MiB',
    '-1',
    '-4MiB',
    '+4MiB',
    '1e3',
    '0x10',
    '1.2.3',
    '.5m',
    '5.',
    '4 XB',
    '4 MiBs',
    '4 Mi B',
    '4,096',
    '4_096',
    'Infinity',
    'NaN',
    '4MiB; rm -rf /',
    '4\n5',
    '１２', // full-width digits
    '8192TiB', // 2^53: not a safe integer
    '99999999999999999999',
  ];
  for (const text of garbage) t.equal(parseSizeBytes(text), undefined, JSON.stringify(text));
});

t.test('parseSizeBytes: every safe integer parses as itself, with any unit', async (t) => {
  const details = fc.check(
    fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n) => {
      if (parseSizeBytes(String(n)) !== n) throw new Error(`${n}`);
      if (parseSizeBytes(`${n}B`) !== n) throw new Error(`${n}B`);
      const kib = n * KiB;
      const parsed = parseSizeBytes(`${n}KiB`);
      if (Number.isSafeInteger(kib) ? parsed !== kib : parsed !== undefined) throw new Error(`${n}KiB -> ${parsed}`);
    }),
    { seed: SEED, numRuns: 500 },
  );
  t.notOk(details.failed, `${details.numRuns} runs`, { counterexample: fc.defaultReportMessage(details) });
});

// ---------------------------------------------------------------- formatBytes

t.test('formatBytes', async (t) => {
  const cases: [number, string][] = [
    [0, '0 B'],
    [1, '1 B'],
    [1023, '1023 B'],
    [1024, '1 KiB'],
    [4 * MiB, '4 MiB'],
    [100 * GiB, '100 GiB'],
    [TiB, '1 TiB'],
    [2.25 * GiB, '2.25 GiB'],
    [10.25 * MiB, '10.3 MiB'],
    [123.4 * MiB, '123 MiB'],
    [-1024, '-1 KiB'],
  ];
  for (const [bytes, text] of cases) t.equal(formatBytes(bytes), text, String(bytes));
  t.match(formatBytes(1.5 * GiB), /^1\.50? GiB$/, '1.5 GiB');
  t.equal(formatBytes(Number.NaN), 'NaN');
  t.equal(formatBytes(Number.POSITIVE_INFINITY), 'Infinity');
});

t.test('formatBytes: three significant digits that parse back within 0.5%', async (t) => {
  const details = fc.check(
    fc.property(fc.integer({ min: 0, max: 2 ** 50 - 1 }), (n) => {
      const text = formatBytes(n);
      const match = /^(\d+(?:\.\d+)?) (B|KiB|MiB|GiB|TiB|PiB)$/.exec(text);
      if (match === null) throw new Error(`unexpected format ${JSON.stringify(text)}`);
      if (match[2] === 'B' && text !== `${n} B`) throw new Error(`bytes are exact: ${text}`);
      const back = parseSizeBytes(text);
      if (back === undefined) throw new Error(`${JSON.stringify(text)} does not parse`);
      if (Math.abs(back - n) > n * 0.005 + 1) throw new Error(`${n} -> ${text} -> ${back}`);
    }),
    { seed: SEED, numRuns: 1000 },
  );
  t.notOk(details.failed, `${details.numRuns} runs`, { counterexample: fc.defaultReportMessage(details) });
});

// ---------------------------------------------------------------- names

t.test('nameSchema accepts ordinary names', async (t) => {
  const good = ['vol1', 'a.b-c_d', 'A', 'x', 'Pool-01', 'db.data_2024-01', 'a'.repeat(NAME_LENGTH_MAX), 'z0.-_'];
  for (const name of good) t.ok(nameSchema.safeParse(name).success, JSON.stringify(name));
  t.equal(NAME_LENGTH_MAX, 64);
});

t.test('nameSchema rejects everything else', async (t) => {
  const bad = [
    '',
    '1abc',
    '123',
    '_vol',
    '.vol',
    '-vol',
    'vol 1',
    ' vol1',
    'vol1 ',
    'vol"1',
    "vol'1",
    'vol`1',
    'vol/1',
    'vol\\1',
    '../etc',
    "x'; DROP TABLE volumes; --",
    'vol;1',
    'vol:1',
    'vol@1',
    'vol%201',
    'vol\n',
    'vol\u0000',
    'vol\t1',
    'a'.repeat(NAME_LENGTH_MAX + 1),
    'vólume',
    'тест',
    '名前',
    'vol\u200b1', // zero-width space
    'ｖｏｌ', // full-width latin
    '\u212Aelvin', // KELVIN SIGN, looks like K
    'vol😀',
  ];
  for (const name of bad) t.notOk(nameSchema.safeParse(name).success, JSON.stringify(name));
  t.notOk(nameSchema.safeParse(12).success, 'a number is not a name');
  t.notOk(nameSchema.safeParse(null).success, 'null is not a name');
});

t.test('nameSchema: accepted names are safe by construction', async (t) => {
  const details = fc.check(
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 80 }),
        fc.string({ unit: 'binary', maxLength: 80 }),
        fc.stringMatching(/^[A-Za-z0-9._\- '"/]{0,70}$/),
      ),
      (text) => {
        if (!nameSchema.safeParse(text).success) return;
        if (text.length < 1 || text.length > 64) throw new Error(`length ${text.length}`);
        if (!/^[A-Za-z]/.test(text)) throw new Error('does not start with a letter');
        for (const ch of text) {
          if (!/[A-Za-z0-9._-]/.test(ch)) throw new Error(`bad character ${JSON.stringify(ch)}`);
        }
        if (parseRef(text) !== text) throw new Error('a valid name is its own reference');
      },
    ),
    { seed: SEED, numRuns: 1000 },
  );
  t.notOk(details.failed, `${details.numRuns} runs`, { counterexample: fc.defaultReportMessage(details) });
});

// ---------------------------------------------------------------- parseRef / refSchema

t.test('parseRef: ids and names', async (t) => {
  t.equal(parseRef('12'), 12, '"12" is id 12');
  t.equal(parseRef('1'), 1);
  t.equal(parseRef('2147483647'), 2 ** 31 - 1, 'largest id');
  t.equal(parseRef('vol1'), 'vol1', 'a name stays a string');
  t.equal(parseRef('a.b-c_d'), 'a.b-c_d');
  const invalid = ['0', '00', '012', '-1', '+1', '1.0', '1e3', '2147483648', '9999999999', '99999999999', 'a b', '', ' 12', '12 ', '1abc', 'vol/1', "x'--", 'a'.repeat(65)];
  for (const text of invalid) t.equal(parseRef(text), undefined, JSON.stringify(text));
});

t.test('parseRef: every answer is an id that prints back as the text, or a valid name', async (t) => {
  const details = fc.check(
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 20 }),
        fc.stringMatching(/^[0-9]{1,12}$/),
        fc.integer({ min: 0, max: 2 ** 32 }).map(String),
        fc.stringMatching(/^[A-Za-z0-9._-]{0,66}$/),
      ),
      (text) => {
        const ref = parseRef(text);
        if (ref === undefined) {
          if (nameSchema.safeParse(text).success) throw new Error('a valid name was refused');
          if (/^[1-9][0-9]*$/.test(text) && Number(text) <= 2 ** 31 - 1) throw new Error('a valid id was refused');
          return;
        }
        if (typeof ref === 'number') {
          if (String(ref) !== text) throw new Error(`id ${ref} from ${JSON.stringify(text)}`);
          if (!refSchema.safeParse(ref).success) throw new Error(`id ${ref} rejected by refSchema`);
        } else {
          if (ref !== text) throw new Error('name changed');
          if (!nameSchema.safeParse(ref).success) throw new Error('name accepted by parseRef but not nameSchema');
        }
      },
    ),
    { seed: SEED, numRuns: 1000 },
  );
  t.notOk(details.failed, `${details.numRuns} runs`, { counterexample: fc.defaultReportMessage(details) });
});

t.test('refSchema: positive ids up to 2^31-1, or names', async (t) => {
  t.ok(refSchema.safeParse(1).success, '1');
  t.ok(refSchema.safeParse(2 ** 31 - 1).success, '2^31-1');
  t.ok(refSchema.safeParse('vol1').success, 'vol1');
  t.notOk(refSchema.safeParse(0).success, '0');
  t.notOk(refSchema.safeParse(-1).success, '-1');
  t.notOk(refSchema.safeParse(1.5).success, '1.5');
  t.notOk(refSchema.safeParse(2 ** 31).success, '2^31');
  t.notOk(refSchema.safeParse('12').success, '"12" as a string is not a name');
  t.notOk(refSchema.safeParse('a b').success, '"a b"');
});
