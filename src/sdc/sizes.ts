/** Chunk arithmetic shared by the SDC's modules. */
export function chunkCountOfVolume(sizeBytes: number, chunkSizeBytes: number): number {
  return Math.ceil(sizeBytes / chunkSizeBytes);
}
