/**
 * Property tests for the placement engine (DESIGN §3): distinct SDS, distinct fault domains
 * whenever possible, balanced by utilization, deterministic, never over capacity.
 */
import t, { type Test } from 'tap';
import fc from 'fast-check';
import {
  faultDomainOf,
  placeChunk,
  placeChunks,
  placeRebuildTarget,
  spreadKeyOf,
  spreadRank,
  type ExistingReplica,
  type PlacementCandidate,
} from '../../src/mdm/placement.js';

const SEED = 0x5eed_2024;
const RUNS = 300;
const MiB = 1024 * 1024;

// ---------------------------------------------------------------- helpers

interface Outcome {
  readonly ok: boolean;
  readonly runs: number;
  readonly report: string;
}

/** Runs a fast-check property with a fixed seed; the report carries the shrunk counterexample. */
function check<Ts>(property: fc.IProperty<Ts>, numRuns = RUNS): Outcome {
  const details = fc.check(property, { seed: SEED, numRuns });
  return {
    ok: !details.failed,
    runs: details.numRuns,
    report: details.failed ? fc.defaultReportMessage(details) ?? 'failed' : '',
  };
}

function holds<Ts>(tt: Test, what: string, property: fc.IProperty<Ts>, numRuns = RUNS): void {
  const outcome = check(property, numRuns);
  tt.ok(outcome.ok, `${what} (${outcome.runs} runs)`, outcome.ok ? {} : { counterexample: outcome.report });
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function clone(candidates: readonly PlacementCandidate[]): PlacementCandidate[] {
  return candidates.map((candidate) => ({ ...candidate }));
}

const domainOf = (candidate: { sdsId: number; faultSetId: number | null }): string =>
  faultDomainOf(candidate.sdsId, candidate.faultSetId);

const hasRoom = (candidate: PlacementCandidate, chunk: number): boolean =>
  candidate.capacityBytes - candidate.usedBytes >= chunk;

/**
 * The ordering the module documents: lower utilization after placement first, then more free
 * bytes, then (with a spread key) the lower spread rank, then the lower SDS id. Negative when a
 * ranks before b.
 */
function rank(chunk: number, spreadKey?: number) {
  return (a: PlacementCandidate, b: PlacementCandidate): number => {
    const ua = (a.usedBytes + chunk) / a.capacityBytes;
    const ub = (b.usedBytes + chunk) / b.capacityBytes;
    if (ua !== ub) return ua < ub ? -1 : 1;
    const fa = a.capacityBytes - a.usedBytes;
    const fb = b.capacityBytes - b.usedBytes;
    if (fa !== fb) return fa > fb ? -1 : 1;
    if (spreadKey !== undefined && spreadRank(spreadKey, a.sdsId) !== spreadRank(spreadKey, b.sdsId)) {
      return spreadRank(spreadKey, a.sdsId) < spreadRank(spreadKey, b.sdsId) ? -1 : 1;
    }
    return a.sdsId - b.sdsId;
  };
}

/** Small deterministic PRNG, so a shuffle is reproducible from a fast-check integer. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  let state = seed >>> 0 || 1;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i -= 1) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

// ---------------------------------------------------------------- generators

interface Topology {
  readonly chunk: number;
  readonly copies: number;
  readonly candidates: readonly PlacementCandidate[];
  readonly existing: readonly ExistingReplica[];
  readonly shuffleSeed: number;
  /** The chunk's spread key, or none (ties by SDS id). */
  readonly spreadKey: number | undefined;
}

const chunkArb = fc.constantFrom(1, 4096, 4 * MiB);

const sdsArb = fc.record({
  sdsId: fc.integer({ min: 1, max: 200 }),
  faultSetId: fc.constantFrom<number | null>(null, 1, 2, 3, 4),
  capacityChunks: fc.integer({ min: 1, max: 50 }),
  usedPermille: fc.integer({ min: 0, max: 1000 }),
});

const existingArb = fc.array(
  fc.record({
    pick: fc.nat(),
    foreign: fc.boolean(),
    faultSetId: fc.constantFrom<number | null>(null, 1, 2, 3, 4),
  }),
  { maxLength: 2 },
);

/** 1..12 SDS, fault set in {none, 1..4}, capacity 1..50 chunks, used 0..capacity (whole chunks). */
const topologyArb: fc.Arbitrary<Topology> = fc
  .record({
    chunk: chunkArb,
    copies: fc.constantFrom(2, 3),
    sds: fc.uniqueArray(sdsArb, { minLength: 1, maxLength: 12, selector: (sds) => sds.sdsId }),
    existing: existingArb,
    shuffleSeed: fc.integer(),
    spreadKey: fc.option(fc.nat({ max: 0xffff_ffff }), { nil: undefined }),
  })
  .map(({ chunk, copies, sds, existing, shuffleSeed, spreadKey }) => {
    const candidates = sds.map((s) => {
      const usedChunks = Math.floor((s.capacityChunks * s.usedPermille) / 1000);
      return {
        sdsId: s.sdsId,
        faultSetId: s.faultSetId,
        capacityBytes: s.capacityChunks * chunk,
        usedBytes: usedChunks * chunk,
      };
    });
    const replicas = new Map<number, ExistingReplica>();
    for (const pick of existing) {
      // Either an SDS of the pool (its real fault set) or one that is gone from the candidates.
      const replica = pick.foreign
        ? { sdsId: 1000 + (pick.pick % 5), faultSetId: pick.faultSetId }
        : {
            sdsId: candidates[pick.pick % candidates.length]!.sdsId,
            faultSetId: candidates[pick.pick % candidates.length]!.faultSetId,
          };
      replicas.set(replica.sdsId, replica);
    }
    return { chunk, copies, candidates, existing: [...replicas.values()], shuffleSeed, spreadKey };
  });

/** Facts about a topology the properties compare the answer against. */
function analyse(topology: Topology) {
  const existingIds = new Set(topology.existing.map((replica) => replica.sdsId));
  const existingDomains = new Set(topology.existing.map(domainOf));
  const eligible = topology.candidates.filter(
    (candidate) => !existingIds.has(candidate.sdsId) && hasRoom(candidate, topology.chunk),
  );
  const availableDomains = new Set(eligible.map(domainOf).filter((domain) => !existingDomains.has(domain)));
  return { existingIds, existingDomains, eligible, availableDomains };
}

function place(topology: Topology) {
  return placeChunk(topology.candidates, topology.copies, topology.chunk, topology.existing, topology.spreadKey);
}

// ---------------------------------------------------------------- faultDomainOf

t.test('faultDomainOf: an SDS without a fault set is a domain of its own', async (t) => {
  t.equal(faultDomainOf(7, 3), faultDomainOf(9, 3), 'two SDS in fault set 3 share a domain');
  t.not(faultDomainOf(7, 3), faultDomainOf(7, 4), 'different fault sets are different domains');
  t.not(faultDomainOf(7, null), faultDomainOf(9, null), 'two SDS without fault set are distinct domains');
  t.equal(faultDomainOf(7, null), faultDomainOf(7, null), 'stable for the same SDS');
  t.not(faultDomainOf(3, null), faultDomainOf(99, 3), 'SDS 3 alone is not fault set 3');
  t.not(faultDomainOf(3, 3), faultDomainOf(3, null), 'an SDS in fault set 3 is not the lone-SDS domain of SDS 3');
});

// ---------------------------------------------------------------- placeChunk: examples

t.test('placeChunk examples', async (t) => {
  const chunk = 4 * MiB;
  const sds = (sdsId: number, faultSetId: number | null, capChunks: number, usedChunks: number) => ({
    sdsId,
    faultSetId,
    capacityBytes: capChunks * chunk,
    usedBytes: usedChunks * chunk,
  });

  t.test('prefers a second fault set over a less used SDS in the same fault set', async (t) => {
    const candidates = [sds(1, 1, 10, 0), sds(2, 1, 10, 0), sds(3, 1, 10, 0), sds(4, 2, 10, 8)];
    t.same(placeChunk(candidates, 2, chunk), { ok: true, sdsIds: [1, 4] });
  });

  t.test('balances by utilization after placement, not by free bytes', async (t) => {
    // SDS 1: (5+1)/10 = 0.6 ; SDS 2: (40+1)/100 = 0.41 ; SDS 3: (1+1)/2 = 1.0
    const candidates = [sds(1, null, 10, 5), sds(2, null, 100, 40), sds(3, null, 2, 1)];
    t.same(placeChunk(candidates, 2, chunk), { ok: true, sdsIds: [2, 1] });
  });

  t.test('equal utilization: more free bytes first, then the lower SDS id', async (t) => {
    // (1+1)/4 = 0.5 and (3+1)/8 = 0.5 ; SDS 8 has more free bytes.
    t.same(placeChunk([sds(5, null, 4, 1), sds(8, null, 8, 3)], 2, chunk), { ok: true, sdsIds: [8, 5] });
    t.same(placeChunk([sds(9, null, 4, 1), sds(6, null, 4, 1), sds(7, null, 4, 1)], 2, chunk), {
      ok: true,
      sdsIds: [6, 7],
    });
  });

  t.test('skips existing replicas and their fault domains', async (t) => {
    const candidates = [sds(1, 1, 10, 0), sds(2, 1, 10, 0), sds(3, 2, 10, 5), sds(4, 3, 10, 6)];
    const result = placeChunk(candidates, 2, chunk, [{ sdsId: 1, faultSetId: 1 }]);
    t.same(result, { ok: true, sdsIds: [3, 4] }, 'SDS 2 is emptier but shares fault set 1 with the existing replica');
  });

  t.test('falls back to distinct SDS when fault domains run out', async (t) => {
    const candidates = [sds(1, 1, 10, 0), sds(2, 1, 10, 1), sds(3, 1, 10, 2)];
    t.same(placeChunk(candidates, 3, chunk), { ok: true, sdsIds: [1, 2, 3] });
  });

  t.test('fails with a reason when too few SDS have a free chunk', async (t) => {
    const candidates = [sds(1, 1, 10, 10), sds(2, 2, 10, 9), sds(3, 3, 1, 1)];
    const result = placeChunk(candidates, 2, chunk);
    t.equal(result.ok, false);
    if (!result.ok) t.match(result.reason, /needs 2 SDS.*1 available/);
    // A partially free SDS does not count: 1 byte short of a chunk.
    const short = [sds(1, null, 10, 0), { sdsId: 2, faultSetId: null, capacityBytes: chunk * 2, usedBytes: chunk + 1 }];
    t.equal(placeChunk(short, 2, chunk).ok, false, 'an SDS with less than a chunk free is not a candidate');
  });
});

// ---------------------------------------------------------------- placeChunk: properties

t.test('placeChunk: ok iff at least `copies` candidates have room; the answer is well formed', async (t) => {
  holds(
    t,
    'validity',
    fc.property(topologyArb, (topology) => {
      const { eligible, existingIds } = analyse(topology);
      const result = place(topology);
      assert(result.ok === eligible.length >= topology.copies, `ok=${result.ok} with ${eligible.length} eligible`);
      if (!result.ok) {
        assert(typeof result.reason === 'string' && result.reason.length > 0, 'a failure carries a reason');
        return;
      }
      assert(result.sdsIds.length === topology.copies, `wanted ${topology.copies} ids, got ${result.sdsIds.length}`);
      assert(new Set(result.sdsIds).size === result.sdsIds.length, `ids not distinct: ${result.sdsIds}`);
      for (const id of result.sdsIds) {
        const candidate = topology.candidates.find((c) => c.sdsId === id);
        assert(candidate !== undefined, `SDS ${id} is not a candidate`);
        assert(hasRoom(candidate, topology.chunk), `SDS ${id} has no free chunk`);
        assert(!existingIds.has(id), `SDS ${id} already holds a replica`);
      }
    }),
  );
});

t.test('placeChunk: distinct fault domains whenever enough are available', async (t) => {
  holds(
    t,
    'fault domains',
    fc.property(topologyArb, (topology) => {
      const { eligible, existingDomains, availableDomains } = analyse(topology);
      const result = place(topology);
      if (eligible.length < topology.copies) return;
      assert(result.ok, 'placement should succeed');
      const chosenDomains = result.sdsIds.map((id) => domainOf(topology.candidates.find((c) => c.sdsId === id)!));
      const newDomains = new Set(chosenDomains.filter((domain) => availableDomains.has(domain)));
      if (availableDomains.size >= topology.copies) {
        assert(new Set(chosenDomains).size === topology.copies, `domains not pairwise distinct: ${chosenDomains}`);
        for (const domain of chosenDomains) {
          assert(!existingDomains.has(domain), `domain ${domain} already holds a replica of this chunk`);
        }
      } else {
        assert(
          newDomains.size === availableDomains.size,
          `only ${newDomains.size} of ${availableDomains.size} available new domains used: ${chosenDomains}`,
        );
      }
      assert(
        newDomains.size === Math.min(topology.copies, availableDomains.size),
        `covers ${newDomains.size} new domains, wanted min(${topology.copies}, ${availableDomains.size})`,
      );
    }),
  );
});

t.test('placeChunk: picks the least utilized SDS the fault-domain rule allows', async (t) => {
  holds(
    t,
    'no better swap exists',
    fc.property(topologyArb, (topology) => {
      const { eligible, existingDomains, availableDomains } = analyse(topology);
      const result = place(topology);
      if (!result.ok) return;
      const compare = rank(topology.chunk, topology.spreadKey);
      const byId = new Map(topology.candidates.map((c) => [c.sdsId, c]));
      const chosen = result.sdsIds.map((id) => byId.get(id)!);
      const unchosen = eligible.filter((c) => !result.sdsIds.includes(c.sdsId));
      if (availableDomains.size >= topology.copies) {
        // Replacing any chosen SDS by an unchosen one that keeps the domains distinct and new
        // never gives a better-ranked SDS: each pick is the best of its domain, and the domains
        // are the ones whose best SDS ranks first.
        for (const s of chosen) {
          const otherDomains = new Set(chosen.filter((c) => c !== s).map(domainOf));
          for (const u of unchosen) {
            const domain = domainOf(u);
            if (existingDomains.has(domain) || otherDomains.has(domain)) continue;
            assert(compare(u, s) > 0, `SDS ${u.sdsId} ranks before chosen SDS ${s.sdsId} and could replace it`);
          }
        }
        // The first pick is the best-ranked SDS of any new domain.
        const bestNew = eligible.filter((c) => !existingDomains.has(domainOf(c))).sort(compare)[0]!;
        assert(result.sdsIds[0] === bestNew.sdsId, `first pick ${result.sdsIds[0]}, best is ${bestNew.sdsId}`);
      } else {
        // Each available new domain contributes its best SDS ...
        for (const domain of availableDomains) {
          const best = eligible.filter((c) => domainOf(c) === domain).sort(compare)[0]!;
          assert(result.sdsIds.includes(best.sdsId), `best SDS ${best.sdsId} of domain ${domain} not chosen`);
        }
        // ... and the rest are the best-ranked of what remains.
        const firsts = new Set(
          [...availableDomains].map((domain) => eligible.filter((c) => domainOf(c) === domain).sort(compare)[0]!),
        );
        const fillers = chosen.filter((c) => !firsts.has(c));
        assert(fillers.length === topology.copies - availableDomains.size, 'filler count');
        for (const filler of fillers) {
          for (const u of unchosen) {
            assert(compare(u, filler) > 0, `unchosen SDS ${u.sdsId} ranks before filler ${filler.sdsId}`);
          }
        }
      }
    }),
  );
});

t.test('placeChunk: deterministic and independent of the order of the candidates', async (t) => {
  holds(
    t,
    'same input, same output; shuffled input, same output',
    fc.property(topologyArb, (topology) => {
      const first = place(topology);
      const second = place(topology);
      assert(JSON.stringify(first) === JSON.stringify(second), 'two calls disagree');
      const shuffledCandidates = shuffled(clone(topology.candidates), topology.shuffleSeed);
      const shuffledExisting = shuffled(topology.existing, topology.shuffleSeed ^ 0x55);
      const third = placeChunk(shuffledCandidates, topology.copies, topology.chunk, shuffledExisting, topology.spreadKey);
      assert(
        JSON.stringify(first) === JSON.stringify(third),
        `order changed the answer: ${JSON.stringify(first)} vs ${JSON.stringify(third)}`,
      );
    }),
  );
});

t.test('placeChunk: does not mutate the candidates or existing replicas', async (t) => {
  holds(
    t,
    'inputs unchanged',
    fc.property(topologyArb, (topology) => {
      const candidates = clone(topology.candidates);
      const frozenOrder = [...candidates];
      const before = JSON.stringify(candidates);
      const existing = topology.existing.map((replica) => ({ ...replica }));
      const existingBefore = JSON.stringify(existing);
      placeChunk(candidates, topology.copies, topology.chunk, existing, topology.spreadKey);
      assert(JSON.stringify(candidates) === before, 'candidate usage or fields changed');
      assert(candidates.every((c, i) => c === frozenOrder[i]), 'candidate array was reordered');
      assert(JSON.stringify(existing) === existingBefore, 'existing replicas changed');
    }),
  );
  // Frozen inputs: any write would throw in strict mode.
  const frozen = Object.freeze([
    Object.freeze({ sdsId: 2, faultSetId: null, capacityBytes: 8, usedBytes: 0 }),
    Object.freeze({ sdsId: 1, faultSetId: null, capacityBytes: 8, usedBytes: 4 }),
  ]) as readonly PlacementCandidate[];
  t.same(placeChunk(frozen, 2, 4), { ok: true, sdsIds: [2, 1] }, 'works on frozen candidates');
});

// ---------------------------------------------------------------- placeChunks

t.test('placeChunks: never over-fills, reports how many chunks it placed', async (t) => {
  const arb = fc.record({ topology: topologyArb, count: fc.integer({ min: 0, max: 40 }) });
  holds(
    t,
    'capacity and accounting',
    fc.property(arb, ({ topology, count }) => {
      const { chunk, copies } = topology;
      const candidates = clone(topology.candidates);
      const before = new Map(candidates.map((c) => [c.sdsId, c.usedBytes]));
      const totalFreeChunks = candidates.reduce(
        (sum, c) => sum + Math.floor((c.capacityBytes - c.usedBytes) / chunk),
        0,
      );
      const result = placeChunks(candidates, copies, chunk, count);
      for (const c of candidates) {
        assert(c.usedBytes <= c.capacityBytes, `SDS ${c.sdsId} over-filled: ${c.usedBytes} > ${c.capacityBytes}`);
        assert((c.usedBytes - before.get(c.sdsId)!) % chunk === 0, 'usage changes in whole chunks');
      }
      const charged = candidates.reduce((sum, c) => sum + (c.usedBytes - before.get(c.sdsId)!), 0);
      if (totalFreeChunks < copies * count) assert(!result.ok, 'not enough free chunks in total, yet ok');
      if (result.ok) {
        assert(result.placements.length === count, `${result.placements.length} placements for ${count} chunks`);
        const appearances = new Map<number, number>();
        for (const placement of result.placements) {
          assert(placement.length === copies && new Set(placement).size === copies, `bad placement ${placement}`);
          for (const id of placement) appearances.set(id, (appearances.get(id) ?? 0) + 1);
        }
        for (const c of candidates) {
          const delta = c.usedBytes - before.get(c.sdsId)!;
          assert(delta === (appearances.get(c.sdsId) ?? 0) * chunk, `SDS ${c.sdsId} charged ${delta}`);
        }
      } else {
        assert(Number.isInteger(result.placedCount), 'placedCount is an integer');
        assert(result.placedCount >= 0 && result.placedCount < count, `placedCount ${result.placedCount} of ${count}`);
        assert(charged === result.placedCount * copies * chunk, `charged ${charged} for ${result.placedCount} chunks`);
        const withRoom = candidates.filter((c) => hasRoom(c, chunk)).length;
        assert(withRoom < copies, `stopped although ${withRoom} SDS still had room`);
        assert(result.reason.length > 0, 'a failure carries a reason');
      }
    }),
  );
});

t.test('placeChunks: each chunk is placed as placeChunk would, seeing the previous ones', async (t) => {
  const arb = fc.record({ topology: topologyArb, count: fc.integer({ min: 0, max: 30 }) });
  holds(
    t,
    'sequential equivalence',
    fc.property(arb, ({ topology, count }) => {
      const batch = clone(topology.candidates);
      const keyAt = topology.spreadKey === undefined ? undefined : (i: number) => spreadKeyOf(topology.spreadKey!, i);
      const result = placeChunks(batch, topology.copies, topology.chunk, count, keyAt);
      const manual = clone(topology.candidates);
      const placements: number[][] = [];
      for (let i = 0; i < count; i += 1) {
        const one = placeChunk(manual, topology.copies, topology.chunk, [], keyAt?.(i));
        if (!one.ok) break;
        for (const id of one.sdsIds) manual.find((c) => c.sdsId === id)!.usedBytes += topology.chunk;
        placements.push(one.sdsIds);
      }
      if (result.ok) assert(JSON.stringify(result.placements) === JSON.stringify(placements), 'placements differ');
      else assert(result.placedCount === placements.length, `placedCount ${result.placedCount} vs ${placements.length}`);
      assert(JSON.stringify(batch) === JSON.stringify(manual), 'final usage differs');
    }),
  );
});

t.test('placeChunks: balanced on equal SDS without fault sets', async (t) => {
  const arb = fc.record({
    copies: fc.constantFrom(2, 3),
    extra: fc.integer({ min: 0, max: 9 }),
    count: fc.integer({ min: 0, max: 200 }),
    ids: fc.uniqueArray(fc.integer({ min: 1, max: 500 }), { minLength: 12, maxLength: 12 }),
    volumeId: fc.option(fc.nat(), { nil: undefined }),
  });
  holds(
    t,
    'max - min chunks per SDS <= 1, with or without spread keys',
    fc.property(arb, ({ copies, extra, count, ids, volumeId }) => {
      const n = copies + extra;
      const chunk = 4096;
      const candidates = ids
        .slice(0, n)
        .map((sdsId) => ({ sdsId, faultSetId: null, capacityBytes: 1000 * chunk, usedBytes: 0 }));
      const result = placeChunks(candidates, copies, chunk, count, volumeId === undefined ? undefined : (i) => spreadKeyOf(volumeId, i));
      assert(result.ok, 'ample capacity');
      const counts = candidates.map((c) => c.usedBytes / chunk);
      assert(Math.max(...counts) - Math.min(...counts) <= 1, `unbalanced: ${counts}`);
      assert(counts.reduce((a, b) => a + b, 0) === copies * count, 'every replica is charged');
    }),
  );
  holds(
    t,
    'a uniform pool strands no capacity: ok iff copies*count <= total chunks',
    fc.property(
      fc.record({
        copies: fc.constantFrom(2, 3),
        extra: fc.integer({ min: 0, max: 9 }),
        capChunks: fc.integer({ min: 1, max: 20 }),
        slack: fc.integer({ min: -3, max: 3 }),
      }),
      ({ copies, extra, capChunks, slack }) => {
        const n = copies + extra;
        const chunk = MiB;
        const candidates = Array.from({ length: n }, (_, i) => ({
          sdsId: i + 1,
          faultSetId: null,
          capacityBytes: capChunks * chunk,
          usedBytes: 0,
        }));
        const count = Math.max(0, Math.floor((n * capChunks) / copies) + slack);
        const result = placeChunks(candidates, copies, chunk, count);
        assert(result.ok === copies * count <= n * capChunks, `ok=${result.ok} for ${count} chunks on ${n}x${capChunks}`);
      },
    ),
  );
});

t.test('placeChunks: balanced across equal-size fault sets', async (t) => {
  // With F >= copies fault sets of m equal SDS each and room to spare, every chunk lands in
  // `copies` distinct fault sets on the least used SDS of each; the fault sets' totals never
  // drift more than m replicas apart, SDS inside a fault set stay within 1 of each other, and
  // any two SDS of the pool within 2.
  const arb = fc.record({
    copies: fc.constantFrom(2, 3),
    extraSets: fc.integer({ min: 0, max: 3 }),
    perSet: fc.integer({ min: 1, max: 4 }),
    count: fc.integer({ min: 0, max: 200 }),
    shuffleSeed: fc.integer(),
    volumeId: fc.option(fc.nat(), { nil: undefined }),
  });
  holds(
    t,
    'fault set balance, with or without spread keys',
    fc.property(arb, ({ copies, extraSets, perSet, count, shuffleSeed, volumeId }) => {
      const sets = copies + extraSets;
      const chunk = 4096;
      // Ids interleaved across fault sets in a random order, so tie-breaking by id varies.
      const ids = shuffled(
        Array.from({ length: sets * perSet }, (_, i) => i + 1),
        shuffleSeed,
      );
      const candidates = ids.map((sdsId, i) => ({
        sdsId,
        faultSetId: (i % sets) + 1,
        capacityBytes: 1000 * chunk,
        usedBytes: 0,
      }));
      const result = placeChunks(candidates, copies, chunk, count, volumeId === undefined ? undefined : (i) => spreadKeyOf(volumeId, i));
      assert(result.ok, 'ample capacity');
      const setOf = new Map(candidates.map((c) => [c.sdsId, c.faultSetId]));
      for (const placement of result.placements) {
        const setsUsed = new Set(placement.map((id) => setOf.get(id)));
        assert(setsUsed.size === copies, `chunk ${placement} shares a fault set`);
      }
      const perSetCounts = new Map<number, number[]>();
      for (const c of candidates) {
        const list = perSetCounts.get(c.faultSetId) ?? [];
        list.push(c.usedBytes / chunk);
        perSetCounts.set(c.faultSetId, list);
      }
      const totals = [...perSetCounts.values()].map((list) => list.reduce((a, b) => a + b, 0));
      assert(Math.max(...totals) - Math.min(...totals) <= perSet, `fault set totals ${totals} (m=${perSet})`);
      if (sets === copies) assert(new Set(totals).size === 1, `every chunk uses every fault set: ${totals}`);
      for (const list of perSetCounts.values()) {
        assert(Math.max(...list) - Math.min(...list) <= 1, `inside a fault set: ${list}`);
      }
      const all = candidates.map((c) => c.usedBytes / chunk);
      assert(Math.max(...all) - Math.min(...all) <= 2, `per SDS: ${all}`);
    }),
  );
});

t.test('placeChunks: spread keys mirror each SDS across all the others (a rebuild reads from every survivor)', async (t) => {
  // 20 equal SDS without fault sets, 40 volumes of 50 chunks placed as thick creation places
  // them: each SDS ends with 200 replicas. Without spread keys every tie goes to the lower id and
  // the SDS fill in lockstep pairs: each one's partner is always the same SDS, so its rebuild has
  // one source. With them, each SDS's chunks have their other copy spread over the 19 others.
  const sdsCount = 20;
  const chunk = 4096;
  const partnersOf = (placements: number[][]): Map<number, Map<number, number>> => {
    const partners = new Map<number, Map<number, number>>();
    for (const [a, b] of placements) {
      for (const [self, other] of [[a!, b!], [b!, a!]] as const) {
        const counts = partners.get(self) ?? new Map<number, number>();
        counts.set(other, (counts.get(other) ?? 0) + 1);
        partners.set(self, counts);
      }
    }
    return partners;
  };
  const placeAll = (spread: boolean): number[][] => {
    const candidates = Array.from({ length: sdsCount }, (_, i) => ({ sdsId: i + 1, faultSetId: null, capacityBytes: 1000 * chunk, usedBytes: 0 }));
    const placements: number[][] = [];
    for (let volumeId = 1; volumeId <= 40; volumeId += 1) {
      const result = placeChunks(candidates, 2, chunk, 50, spread ? (i) => spreadKeyOf(volumeId, i) : undefined);
      assert(result.ok, 'ample capacity');
      placements.push(...result.placements);
    }
    const counts = candidates.map((c) => c.usedBytes / chunk);
    assert(Math.max(...counts) - Math.min(...counts) <= 1, `unbalanced: ${counts}`);
    return placements;
  };
  const lockstep = partnersOf(placeAll(false));
  t.ok([...lockstep.values()].every((counts) => counts.size === 1), 'without spread keys: one partner per SDS (the lockstep this fixes)');
  const spread = partnersOf(placeAll(true));
  const distinct = [...spread.values()].map((counts) => counts.size);
  t.ok(Math.min(...distinct) >= sdsCount - 2, `with spread keys every SDS has ≥ ${sdsCount - 2} of ${sdsCount - 1} possible partners`, { distinct });
  // The largest share one partner holds bounds a rebuild's time: the one source it must read most from.
  const mostFromOne = Math.max(...[...spread.values()].map((counts) => Math.max(...counts.values())));
  t.ok(mostFromOne <= 30, `no partner holds more than 30 of an SDS's 200 chunks (even share: 10.5): ${mostFromOne}`);
});

t.test('placeRebuildTarget: waits for a busy SDS of a free fault domain rather than doubling one', async (t) => {
  const chunk = 4 * MiB;
  const sds = (sdsId: number, faultSetId: number, capChunks = 10, usedChunks = 0) => ({ sdsId, faultSetId, capacityBytes: capChunks * chunk, usedBytes: usedChunks * chunk });
  // The survivor is SDS 1 (fault set 1); SDS 2 shares its fault set, SDS 3 (fault set 2) is busy.
  const all = [sds(2, 1), sds(3, 2)];
  const existing: ExistingReplica[] = [{ sdsId: 1, faultSetId: 1 }];
  t.same(placeRebuildTarget([sds(2, 1)], all, chunk, existing), { ok: false, wait: true, reason: 'every SDS of a fault domain the chunk does not use is busy' }, 'SDS 3 is busy: wait');
  t.same(placeRebuildTarget(all, all, chunk, existing), { ok: true, sdsIds: [3] }, 'SDS 3 free: it');
  const full = [sds(2, 1), sds(3, 2, 10, 10)];
  t.same(placeRebuildTarget([sds(2, 1)], full, chunk, existing), { ok: true, sdsIds: [2] }, 'the other domain has no room at all: the same fault set, as placeChunk falls back');
  t.same(placeRebuildTarget([], all, chunk, existing).ok, false, 'nothing free: not placed');
});
