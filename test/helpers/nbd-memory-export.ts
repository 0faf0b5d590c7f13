/**
 * A Buffer-backed NBD export for tests, with sparse tracking per granule so base:allocation tells holes,
 * zeroed-but-allocated and data apart, counters for every call, and hooks to delay or fail operations.
 */
import { NbdError, NBD_STATE_HOLE, NBD_STATE_ZERO, type NbdExport, type NbdExportProvider, type NbdExtent, type NbdWriteZeroesOptions } from '../../nbd/index.js';

export type MemoryOperation = 'read' | 'write' | 'flush' | 'trim' | 'writeZeroes' | 'cache' | 'blockStatus';

const GRANULE_HOLE = 0;
const GRANULE_DATA = 1;
const GRANULE_ZERO = 2; // allocated, known zero (WRITE_ZEROES with NO_HOLE)

export interface MemoryExportOptions {
  readonly name: string;
  readonly sizeBytes: number;
  readonly description?: string;
  readonly readOnly?: boolean;
  readonly minimumBlockBytes?: number;
  readonly preferredBlockBytes?: number;
  readonly maximumBlockBytes?: number;
  /** Allocation tracking unit; default 4096. */
  readonly granularityBytes?: number;
  /** Reply later (ms) to shuffle completion order. */
  readonly delayMs?: (operation: MemoryOperation, offsetBytes: number, lengthBytes: number) => number;
  /** Throw this instead of doing the operation. */
  readonly fail?: (operation: MemoryOperation, offsetBytes: number, lengthBytes: number) => Error | undefined;
  /** Refuse FAST_ZERO requests with ENOTSUP instead of zeroing. */
  readonly slowZeroes?: boolean;
}

export class MemoryExport implements NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly minimumBlockBytes?: number;
  readonly preferredBlockBytes?: number;
  readonly maximumBlockBytes?: number;
  readonly data: Buffer;
  readonly calls: Record<MemoryOperation, number> = { read: 0, write: 0, flush: 0, trim: 0, writeZeroes: 0, cache: 0, blockStatus: 0 };
  fuaCount = 0;
  /** Calls inside the export right now, and the most seen at once. */
  activeCalls = 0;
  activeCallsMax = 0;
  private readonly granularityBytes: number;
  private readonly granules: Uint8Array;

  constructor(private readonly options: MemoryExportOptions) {
    this.name = options.name;
    if (options.description !== undefined) this.description = options.description;
    this.sizeBytes = options.sizeBytes;
    this.readOnly = options.readOnly ?? false;
    if (options.minimumBlockBytes !== undefined) this.minimumBlockBytes = options.minimumBlockBytes;
    if (options.preferredBlockBytes !== undefined) this.preferredBlockBytes = options.preferredBlockBytes;
    if (options.maximumBlockBytes !== undefined) this.maximumBlockBytes = options.maximumBlockBytes;
    this.granularityBytes = options.granularityBytes ?? 4096;
    this.data = Buffer.alloc(options.sizeBytes);
    this.granules = new Uint8Array(Math.ceil(options.sizeBytes / this.granularityBytes));
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    await this.enter('read', offsetBytes, lengthBytes);
    return Buffer.from(this.data.subarray(offsetBytes, offsetBytes + lengthBytes));
  }

  async write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    await this.enter('write', offsetBytes, data.length);
    if (fua) this.fuaCount += 1;
    data.copy(this.data, offsetBytes);
    this.mark(offsetBytes, data.length, GRANULE_DATA, 'touched');
  }

  async flush(): Promise<void> {
    await this.enter('flush', 0, 0);
  }

  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    await this.enter('trim', offsetBytes, lengthBytes);
    if (fua) this.fuaCount += 1;
    // Only whole granules are discarded (the spec lets trim round inward); they read back as zeroes.
    this.mark(offsetBytes, lengthBytes, GRANULE_HOLE, 'covered');
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options: NbdWriteZeroesOptions): Promise<void> {
    await this.enter('writeZeroes', offsetBytes, lengthBytes);
    if (options.fastZero && this.options.slowZeroes === true) throw new NbdError('ENOTSUP', 'zeroing is not faster than writing here');
    if (options.fua) this.fuaCount += 1;
    this.data.fill(0, offsetBytes, offsetBytes + lengthBytes);
    this.mark(offsetBytes, lengthBytes, options.noHole ? GRANULE_ZERO : GRANULE_HOLE, 'covered');
  }

  async cache(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.enter('cache', offsetBytes, lengthBytes);
  }

  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<NbdExtent[]> {
    await this.enter('blockStatus', offsetBytes, lengthBytes);
    const extents: { lengthBytes: number; flags: number }[] = [];
    const endBytes = offsetBytes + lengthBytes;
    let position = offsetBytes;
    while (position < endBytes) {
      const granule = Math.floor(position / this.granularityBytes);
      const granuleEndBytes = Math.min((granule + 1) * this.granularityBytes, this.sizeBytes);
      const extentBytes = Math.min(granuleEndBytes, endBytes) - position;
      const state = this.granules[granule]!;
      const flags = state === GRANULE_HOLE ? NBD_STATE_HOLE | NBD_STATE_ZERO : state === GRANULE_ZERO ? NBD_STATE_ZERO : 0;
      const last = extents[extents.length - 1];
      if (last !== undefined && last.flags === flags) last.lengthBytes += extentBytes;
      else extents.push({ lengthBytes: extentBytes, flags });
      position += extentBytes;
    }
    return extents;
  }

  /** Bytes allocated according to the sparse map (data or zero granules). */
  allocatedBytes(): number {
    let count = 0;
    for (const state of this.granules) if (state !== GRANULE_HOLE) count += 1;
    return count * this.granularityBytes;
  }

  private async enter(operation: MemoryOperation, offsetBytes: number, lengthBytes: number): Promise<void> {
    this.calls[operation] += 1;
    this.activeCalls += 1;
    this.activeCallsMax = Math.max(this.activeCallsMax, this.activeCalls);
    try {
      const delayMs = this.options.delayMs?.(operation, offsetBytes, lengthBytes) ?? 0;
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    } finally {
      this.activeCalls -= 1;
    }
    const failure = this.options.fail?.(operation, offsetBytes, lengthBytes);
    if (failure !== undefined) throw failure;
  }

  /** 'touched': every granule the range touches; 'covered': only granules wholly inside it. */
  private mark(offsetBytes: number, lengthBytes: number, state: number, which: 'touched' | 'covered'): void {
    if (lengthBytes === 0) return;
    const endBytes = offsetBytes + lengthBytes;
    const first = which === 'touched' ? Math.floor(offsetBytes / this.granularityBytes) : Math.ceil(offsetBytes / this.granularityBytes);
    let last = which === 'touched' ? Math.ceil(endBytes / this.granularityBytes) : Math.floor(endBytes / this.granularityBytes);
    // The export's last granule may be short; reaching the export's end covers it.
    if (which === 'covered' && endBytes === this.sizeBytes) last = this.granules.length;
    for (let granule = first; granule < last; granule += 1) {
      if (state === GRANULE_HOLE) this.data.fill(0, granule * this.granularityBytes, Math.min((granule + 1) * this.granularityBytes, this.sizeBytes));
      this.granules[granule] = state;
    }
  }
}

/** Serves a fixed set of exports; fresh per-connection objects are not needed for memory. */
export class MemoryExportProvider implements NbdExportProvider {
  readonly opened: string[] = [];
  private readonly exports = new Map<string, MemoryExport>();

  constructor(
    exports: readonly MemoryExport[],
    private readonly defaultName?: string,
  ) {
    for (const nbdExport of exports) this.exports.set(nbdExport.name, nbdExport);
  }

  get(name: string): MemoryExport {
    const nbdExport = this.exports.get(name);
    if (nbdExport === undefined) throw new Error(`no memory export ${name}`);
    return nbdExport;
  }

  list(): { name: string; description?: string }[] {
    return [...this.exports.values()].map((nbdExport) =>
      nbdExport.description === undefined ? { name: nbdExport.name } : { name: nbdExport.name, description: nbdExport.description },
    );
  }

  open(name: string): NbdExport | undefined {
    this.opened.push(name);
    return this.exports.get(name);
  }

  defaultExportName(): string | undefined {
    return this.defaultName;
  }
}
