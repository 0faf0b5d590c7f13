/**
 * What the chunk store needs of device IO: the native IoQueue (src/sds/native-io.ts) has exactly
 * this shape, and the fault-injection layer (device-faults.ts) wraps one with the same shape, so
 * the store never knows which one it drives.
 */
export interface DeviceIo {
  /** 'io_uring' or 'threads' (and what a wrapper adds). */
  readonly backend: string;
  readonly threads: number;
  read(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number>;
  write(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number>;
  fdatasync(fd: number): Promise<void>;
  zeroRange(fd: number, offsetBytes: number, lengthBytes: number): Promise<void>;
  close(): Promise<void>;
}
