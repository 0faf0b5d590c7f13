/**
 * The placement engine (DESIGN §3): which SDS hold a chunk's replicas.
 *
 * Rules, in order: replicas on distinct SDS; in distinct fault sets whenever enough fault sets
 * have room (an SDS without a fault set is a fault set of its own); balanced by capacity, by
 * choosing the SDS whose utilization after placement is lowest. Deterministic: the same inputs
 * always give the same answer, ties broken by more free bytes, then (given the chunk's spread
 * key) by a hash of the key and the SDS id, then the lower SDS id.
 *
 * Why the hash: with equal devices every SDS ties at every step, and a tie broken by id alone
 * fills SDS in lockstep pairs (1 with 2, 3 with 4, …), so each SDS mirrors exactly one partner
 * and a failed SDS is rebuilt from that one source at one disk's speed, however large the
 * cluster. Ranking tied SDS by a hash of (chunk, SDS), as rendezvous hashing does, pairs them
 * afresh for each chunk: an SDS's second copies spread over all the others, and its rebuild
 * reads from all of them (PowerFlex's "bigger cluster, faster rebuild").
 * Pure functions over plain data, so property tests can drive them over random topologies.
 */

export interface PlacementCandidate {
  readonly sdsId: number;
  readonly faultSetId: number | null;
  /** Capacity this SDS gives the pool (sum of its devices in the pool). */
  readonly capacityBytes: number;
  /** Bytes already allocated to replicas on this SDS in the pool. */
  usedBytes: number;
}

export interface ExistingReplica {
  readonly sdsId: number;
  readonly faultSetId: number | null;
}

export type PlacementResult =
  | { readonly ok: true; readonly sdsIds: number[] }
  | { readonly ok: false; readonly reason: string };

export function faultDomainOf(sdsId: number, faultSetId: number | null): string {
  return faultSetId === null ? `sds:${sdsId}` : `fs:${faultSetId}`;
}

function freeBytes(candidate: PlacementCandidate): number {
  return candidate.capacityBytes - candidate.usedBytes;
}

/**
 * A chunk's spread key: any 32-bit integer that differs between chunks and stays the same for
 * one chunk (its volume id and index mixed). Only ties between equally used SDS consult it.
 */
export function spreadKeyOf(first: number, second = 0): number {
  return mix32(Math.imul(first >>> 0, 0x9e3779b1) ^ mix32(second >>> 0));
}

/** murmur3's 32-bit finalizer: every input bit moves every output bit. */
function mix32(value: number): number {
  let x = value >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Where SDS `sdsId` ranks among equally used SDS for the chunk of `spreadKey`. */
export function spreadRank(spreadKey: number, sdsId: number): number {
  return mix32(spreadKey ^ Math.imul(sdsId, 0x27d4eb2d));
}

function compareForPlacement(chunkSizeBytes: number, spreadKey: number | undefined) {
  return (a: PlacementCandidate, b: PlacementCandidate): number => {
    const utilizationA = (a.usedBytes + chunkSizeBytes) / a.capacityBytes;
    const utilizationB = (b.usedBytes + chunkSizeBytes) / b.capacityBytes;
    if (utilizationA !== utilizationB) return utilizationA - utilizationB;
    const freeDifference = freeBytes(b) - freeBytes(a);
    if (freeDifference !== 0) return freeDifference;
    if (spreadKey !== undefined) {
      const rankDifference = spreadRank(spreadKey, a.sdsId) - spreadRank(spreadKey, b.sdsId);
      if (rankDifference !== 0) return rankDifference;
    }
    return a.sdsId - b.sdsId;
  };
}

/**
 * Picks `copies` SDS for one chunk, none of them among `existing` and, when possible, none in a
 * fault domain `existing` already uses. Does not change the candidates' usage. `spreadKey`
 * (spreadKeyOf) breaks ties between equally used SDS differently for each chunk; without it
 * ties go to the lower SDS id.
 */
export function placeChunk(
  candidates: readonly PlacementCandidate[],
  copies: number,
  chunkSizeBytes: number,
  existing: readonly ExistingReplica[] = [],
  spreadKey?: number,
): PlacementResult {
  const existingSdsIds = new Set(existing.map((replica) => replica.sdsId));
  const eligible = candidates
    .filter((candidate) => !existingSdsIds.has(candidate.sdsId) && freeBytes(candidate) >= chunkSizeBytes)
    .sort(compareForPlacement(chunkSizeBytes, spreadKey));
  if (eligible.length < copies) {
    return {
      ok: false,
      reason: `needs ${copies} SDS with a free ${chunkSizeBytes}-byte chunk slot, ${eligible.length} available`,
    };
  }
  const usedDomains = new Set(existing.map((replica) => faultDomainOf(replica.sdsId, replica.faultSetId)));
  const chosen: PlacementCandidate[] = [];
  for (const candidate of eligible) {
    if (chosen.length === copies) break;
    const domain = faultDomainOf(candidate.sdsId, candidate.faultSetId);
    if (usedDomains.has(domain)) continue;
    usedDomains.add(domain);
    chosen.push(candidate);
  }
  // Not enough fault domains with room: fall back to distinct SDS only.
  for (const candidate of eligible) {
    if (chosen.length === copies) break;
    if (!chosen.includes(candidate)) chosen.push(candidate);
  }
  return { ok: true, sdsIds: chosen.map((candidate) => candidate.sdsId) };
}

/**
 * Places `chunkCount` chunks one after another, charging each placement to the candidates so
 * the next chunk sees it. All or nothing: on failure the caller discards the whole plan.
 * `spreadKeyAt(index)` is the spread key of the index-th chunk (none: ties by SDS id).
 */
export function placeChunks(
  candidates: PlacementCandidate[],
  copies: number,
  chunkSizeBytes: number,
  chunkCount: number,
  spreadKeyAt?: (index: number) => number,
): { ok: true; placements: number[][] } | { ok: false; reason: string; placedCount: number } {
  const byId = new Map(candidates.map((candidate) => [candidate.sdsId, candidate]));
  const placements: number[][] = [];
  for (let index = 0; index < chunkCount; index += 1) {
    const result = placeChunk(candidates, copies, chunkSizeBytes, [], spreadKeyAt?.(index));
    if (!result.ok) return { ok: false, reason: result.reason, placedCount: index };
    for (const sdsId of result.sdsIds) byId.get(sdsId)!.usedBytes += chunkSizeBytes;
    placements.push(result.sdsIds);
  }
  return { ok: true, placements };
}

/**
 * A rebuild's one new replica: placeChunk over the targets free now (`placeable`), except that a
 * target in a fault domain the chunk already uses is taken only when no SDS of an unused domain
 * has room at all (`all`, busy or not). A free domain whose SDS are all busy with other copies is
 * waited for: two replicas in one fault set is a lasting loss of redundancy, a busy target a wait
 * of one copy (the first 1 TiB bench run left 106 chunks doubled in a fault set that way).
 */
export function placeRebuildTarget(
  placeable: readonly PlacementCandidate[],
  all: readonly PlacementCandidate[],
  chunkSizeBytes: number,
  existing: readonly ExistingReplica[],
  spreadKey?: number,
): PlacementResult | { readonly ok: false; readonly wait: true; readonly reason: string } {
  const placed = placeChunk(placeable, 1, chunkSizeBytes, existing, spreadKey);
  if (!placed.ok) return placed;
  const usedDomains = new Set(existing.map((replica) => faultDomainOf(replica.sdsId, replica.faultSetId)));
  const target = placeable.find((candidate) => candidate.sdsId === placed.sdsIds[0])!;
  if (!usedDomains.has(faultDomainOf(target.sdsId, target.faultSetId))) return placed;
  const holders = new Set(existing.map((replica) => replica.sdsId));
  const freeDomainExists = all.some(
    (candidate) => !holders.has(candidate.sdsId) && freeBytes(candidate) >= chunkSizeBytes && !usedDomains.has(faultDomainOf(candidate.sdsId, candidate.faultSetId)),
  );
  return freeDomainExists ? { ok: false, wait: true, reason: 'every SDS of a fault domain the chunk does not use is busy' } : placed;
}
