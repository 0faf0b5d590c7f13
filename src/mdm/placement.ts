/**
 * The placement engine (DESIGN §3): which SDS hold a chunk's replicas.
 *
 * Rules, in order: replicas on distinct SDS; in distinct fault sets whenever enough fault sets
 * have room (an SDS without a fault set is a fault set of its own); balanced by capacity, by
 * choosing the SDS whose utilization after placement is lowest. Deterministic: the same inputs
 * always give the same answer, ties broken by more free bytes, then the lower SDS id.
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

function compareForPlacement(chunkSizeBytes: number) {
  return (a: PlacementCandidate, b: PlacementCandidate): number => {
    const utilizationA = (a.usedBytes + chunkSizeBytes) / a.capacityBytes;
    const utilizationB = (b.usedBytes + chunkSizeBytes) / b.capacityBytes;
    if (utilizationA !== utilizationB) return utilizationA - utilizationB;
    const freeDifference = freeBytes(b) - freeBytes(a);
    if (freeDifference !== 0) return freeDifference;
    return a.sdsId - b.sdsId;
  };
}

/**
 * Picks `copies` SDS for one chunk, none of them among `existing` and, when possible, none in a
 * fault domain `existing` already uses. Does not change the candidates' usage.
 */
export function placeChunk(
  candidates: readonly PlacementCandidate[],
  copies: number,
  chunkSizeBytes: number,
  existing: readonly ExistingReplica[] = [],
): PlacementResult {
  const existingSdsIds = new Set(existing.map((replica) => replica.sdsId));
  const eligible = candidates
    .filter((candidate) => !existingSdsIds.has(candidate.sdsId) && freeBytes(candidate) >= chunkSizeBytes)
    .sort(compareForPlacement(chunkSizeBytes));
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
 */
export function placeChunks(
  candidates: PlacementCandidate[],
  copies: number,
  chunkSizeBytes: number,
  chunkCount: number,
): { ok: true; placements: number[][] } | { ok: false; reason: string; placedCount: number } {
  const byId = new Map(candidates.map((candidate) => [candidate.sdsId, candidate]));
  const placements: number[][] = [];
  for (let index = 0; index < chunkCount; index += 1) {
    const result = placeChunk(candidates, copies, chunkSizeBytes);
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
): PlacementResult | { readonly ok: false; readonly wait: true; readonly reason: string } {
  const placed = placeChunk(placeable, 1, chunkSizeBytes, existing);
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
