/**
 * What an SDS says of each chunk it knows (GET /chunks on its control plane, GET /replicas on its
 * management plane): the SDS writes it, the MDM's rebuilder and tests read it.
 */
export interface ChunkListing {
  volume_id: number;
  chunk_index: number;
  pool_id: number;
  epoch: number;
  /** The highest epoch a mutation was applied at here. */
  written_epoch: number;
  /** A replica being rebuilt here: a write target, never a source or a reader. */
  rebuilding: boolean;
  /** The chunk has a slot here (it was written here), and its device is not lost. */
  stored: boolean;
  /** A write intent: written recently, or in flight at a crash. */
  dirty: boolean;
  /** A crash-time write intent the MDM has not decided on: this replica serves no read. */
  needs_resync: boolean;
  /** Its device is missing or foreign: the replica here is gone. */
  lost: boolean;
}
