/**
 * A replica being rebuilt here (DESIGN §6): which 4 KiB blocks of the chunk hold their final
 * bytes already. From the moment the MDM makes this SDS a write target, client writes land here
 * too; a block becomes valid when a client write covers it or the copy from the source fills it,
 * and the copy never writes a valid block, so copied data can never overwrite a client write.
 *
 * A partial write to a block not valid yet first pulls that block from the source (`pull`), so
 * the bytes around the write are the source's and not this slot's stale or zeroed contents.
 */
import { ALIGNMENT_BYTES } from './aligned-buffers.js';

/** Reads [offset, offset+length) of the chunk from the source replica. */
export type BlockPuller = (offsetBytes: number, lengthBytes: number) => Promise<Buffer>;

export class RebuildSession {
  private readonly valid: Uint8Array;
  private invalidCount: number;

  constructor(
    readonly chunkBytes: number,
    /** Undefined for a session found at start (no source yet): partial writes fail until the MDM begins again. */
    readonly pull: BlockPuller | undefined,
    /** Stops the puller's connection when the session ends. */
    private readonly onEnd: () => void = () => undefined,
  ) {
    const blocks = Math.ceil(chunkBytes / ALIGNMENT_BYTES);
    this.valid = new Uint8Array(blocks);
    this.invalidCount = blocks;
  }

  get complete(): boolean {
    return this.invalidCount === 0;
  }

  get validBytes(): number {
    return (this.valid.length - this.invalidCount) * ALIGNMENT_BYTES;
  }

  /** Marks the blocks of an aligned byte range valid (their bytes are final here). */
  markValid(startBytes: number, endBytes: number): void {
    const last = Math.min(this.valid.length, Math.ceil(endBytes / ALIGNMENT_BYTES));
    for (let block = Math.floor(startBytes / ALIGNMENT_BYTES); block < last; block += 1) {
      if (this.valid[block] === 0) {
        this.valid[block] = 1;
        this.invalidCount -= 1;
      }
    }
  }

  /** The runs of not-yet-valid blocks inside an aligned byte range, as [start, end) in bytes. */
  invalidRuns(startBytes: number, endBytes: number): [number, number][] {
    const runs: [number, number][] = [];
    const last = Math.min(this.valid.length, Math.ceil(endBytes / ALIGNMENT_BYTES));
    let runStart = -1;
    for (let block = Math.floor(startBytes / ALIGNMENT_BYTES); block < last; block += 1) {
      if (this.valid[block] === 0) {
        if (runStart < 0) runStart = block;
      } else if (runStart >= 0) {
        runs.push([runStart * ALIGNMENT_BYTES, block * ALIGNMENT_BYTES]);
        runStart = -1;
      }
    }
    if (runStart >= 0) runs.push([runStart * ALIGNMENT_BYTES, last * ALIGNMENT_BYTES]);
    return runs;
  }

  end(): void {
    this.onEnd();
  }
}
