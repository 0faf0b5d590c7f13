/**
 * Frames of a fixed-size header and a payload whose size the header gives, assembled from the
 * reads of a ReadSink (direct-reads.ts): bytes of the staging buffer are copied into the header
 * and then into the payload buffer, and the rest of a large payload is read in place. The SDS
 * data port (requests) and the SDS client (replies) both read their frames this way.
 */
import { DIRECT_READ_BYTES_MIN } from './direct-reads.js';

export interface FrameHandlers {
  /**
   * A whole header is in (the buffer is the frame's own; the frame may keep it): the buffer its
   * payload goes into, exactly the payload's size; undefined when it has none; null to stop
   * reading (a malformed header: the caller has dropped the connection).
   */
  onHeader(header: Buffer): Buffer | undefined | null;
  /** The frame is complete. */
  onFrame(header: Buffer, payload: Buffer | undefined): void;
  /** False while no new frame may start (a limit): its bytes stay unread. */
  mayStartFrame?(): boolean;
}

export class FrameAssembler {
  private headerBytes: Buffer;
  private headerFill = 0;
  private headerDone = false;
  private payload: Buffer | undefined;
  private payloadFill = 0;
  /**
   * After a large payload the next header is read on its own, exactly: then its payload is known
   * before the next read and lands in place too, instead of sharing a staging read that is copied.
   */
  private exactHeader = false;

  constructor(
    private readonly headerSizeBytes: number,
    private readonly handlers: FrameHandlers,
    private readonly exactHeaderAfterLargePayload = false,
  ) {
    this.headerBytes = Buffer.allocUnsafe(headerSizeBytes);
  }

  /** Assembles frames out of `bytes`; returns how many it used (fewer when a frame may not start or a header was refused). */
  consume(bytes: Buffer): number {
    let offset = 0;
    while (offset < bytes.length) {
      if (!this.headerDone) {
        if (this.headerFill === 0 && this.handlers.mayStartFrame?.() === false) break;
        const step = Math.min(this.headerSizeBytes - this.headerFill, bytes.length - offset);
        bytes.copy(this.headerBytes, this.headerFill, offset, offset + step);
        this.headerFill += step;
        offset += step;
        if (this.headerFill < this.headerSizeBytes) break;
        if (!this.startPayload()) break;
        continue;
      }
      const payload = this.payload!;
      const step = Math.min(payload.length - this.payloadFill, bytes.length - offset);
      bytes.copy(payload, this.payloadFill, offset, offset + step);
      this.payloadFill += step;
      offset += step;
      if (this.payloadFill === payload.length) this.finish();
    }
    return offset;
  }

  /** Where the next read may land in place: the rest of a large payload, or an exact header. */
  directTarget(): Buffer | undefined {
    const payload = this.payload;
    if (payload === undefined) return !this.headerDone && this.exactHeader ? this.headerBytes.subarray(this.headerFill) : undefined;
    return payload.length - this.payloadFill >= DIRECT_READ_BYTES_MIN ? payload.subarray(this.payloadFill) : undefined;
  }

  /** `count` bytes were read into the last directTarget(). */
  onDirect(count: number): void {
    if (!this.headerDone) {
      this.headerFill += count;
      if (this.headerFill === this.headerSizeBytes) {
        this.exactHeader = false;
        this.startPayload();
      }
      return;
    }
    this.payloadFill += count;
    if (this.payloadFill === this.payload!.length) this.finish();
  }

  /** Drops a frame in progress (the connection is gone); returns its payload buffer, if any. */
  reset(): Buffer | undefined {
    const payload = this.payload;
    this.headerFill = 0;
    this.headerDone = false;
    this.payload = undefined;
    this.exactHeader = false;
    return payload;
  }

  private startPayload(): boolean {
    const payload = this.handlers.onHeader(this.headerBytes);
    if (payload === null) return false;
    this.headerDone = true;
    this.payload = payload;
    this.payloadFill = 0;
    if (payload === undefined) this.finish();
    return true;
  }

  private finish(): void {
    const header = this.headerBytes;
    const payload = this.payload;
    this.exactHeader = this.exactHeaderAfterLargePayload && payload !== undefined && payload.length >= DIRECT_READ_BYTES_MIN;
    this.headerBytes = Buffer.allocUnsafe(this.headerSizeBytes); // the frame keeps the old one
    this.headerFill = 0;
    this.headerDone = false;
    this.payload = undefined;
    this.handlers.onFrame(header, payload);
  }
}
