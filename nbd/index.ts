/** The NBD protocol, server side, independent of storage (DESIGN §5.1). */
export { startNbdServer } from './server.js';
export { NbdError, NBD_ERRNO, type NbdErrno } from './errors.js';
export type {
  NbdExport,
  NbdExportProvider,
  NbdExportSummary,
  NbdExtent,
  NbdServer,
  NbdServerOptions,
  NbdWriteZeroesOptions,
} from './types.js';
export { NBD_STATE_HOLE, NBD_STATE_ZERO } from './constants.js';
