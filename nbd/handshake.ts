/**
 * The handshake phase: fixed newstyle greeting, client flags, then option haggling until the client
 * picks an export (EXPORT_NAME or GO) or aborts. Every option is read whole (bounded by OPTION_BYTES_MAX),
 * validated, and answered; unknown options get NBD_REP_ERR_UNSUP and haggling goes on.
 */
import type { Socket } from 'node:net';
import type { Logger } from '../src/common/logger.js';
import {
  CLIENT_FLAGS_BYTES,
  CLIENT_FLAGS_KNOWN,
  EXPORTS_LISTED_MAX,
  META_CONTEXT_BASE_ALLOCATION,
  META_CONTEXT_BASE_ALLOCATION_ID,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPTS_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  OPTIONS_PER_HANDSHAKE_MAX,
  OPTION_BYTES_MAX,
  OPTION_HEADER_BYTES,
  OUTPUT_BUFFERED_BYTES_HIGH,
} from './constants.js';
import {
  decodeOptionHeader,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextPayload,
  encodeOptionError,
  encodeOptionReply,
  encodeServerPayload,
  parseInfoRequest,
  parseMetaContextRequest,
} from './codec.js';
import { NbdConnectionClosed, NbdProtocolError } from './errors.js';
import { blockSizesOf, transmissionFlagsFor, type NbdSession } from './session.js';
import type { SocketReader } from './socket-reader.js';
import type { NbdExport, NbdExportProvider } from './types.js';

export type HandshakeOutcome = { readonly kind: 'transmission'; readonly session: NbdSession } | { readonly kind: 'aborted' };

const OPTION_NAMES: Record<number, string> = {
  [NBD_OPT_EXPORT_NAME]: 'EXPORT_NAME',
  [NBD_OPT_ABORT]: 'ABORT',
  [NBD_OPT_LIST]: 'LIST',
  [NBD_OPT_INFO]: 'INFO',
  [NBD_OPT_GO]: 'GO',
  [NBD_OPT_STRUCTURED_REPLY]: 'STRUCTURED_REPLY',
  [NBD_OPT_LIST_META_CONTEXT]: 'LIST_META_CONTEXT',
  [NBD_OPT_SET_META_CONTEXT]: 'SET_META_CONTEXT',
};

export function optionName(option: number): string {
  return OPTION_NAMES[option] ?? `option ${option}`;
}

interface ResolvedExport {
  readonly nbdExport: NbdExport;
}

/** One connection's option haggling; run() resolves when transmission may start or the client aborted. */
export class Handshake {
  private fixedNewstyle = false;
  private noZeroes = false;
  private structuredReplies = false;
  /** Export name given to the last SET_META_CONTEXT, and whether it selected base:allocation. */
  private metaContext: { readonly exportName: string; readonly baseAllocation: boolean } | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    private readonly provider: NbdExportProvider,
    private readonly log: Logger,
  ) {}

  async run(): Promise<HandshakeOutcome> {
    this.send(encodeGreeting());
    const clientFlags = (await this.reader.read(CLIENT_FLAGS_BYTES)).readUInt32BE(0);
    if ((clientFlags & ~CLIENT_FLAGS_KNOWN) !== 0) {
      throw new NbdProtocolError(`client flags 0x${clientFlags.toString(16)} include flags the server did not offer`);
    }
    this.fixedNewstyle = (clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;

    for (let optionCount = 1; optionCount <= OPTIONS_PER_HANDSHAKE_MAX; optionCount += 1) {
      const header = decodeOptionHeader(await this.reader.read(OPTION_HEADER_BYTES));
      if (header.magic !== NBD_OPTS_MAGIC) throw new NbdProtocolError(`bad option magic 0x${header.magic.toString(16)}`);
      const { option, lengthBytes } = header;
      if (lengthBytes > OPTION_BYTES_MAX) {
        // Reading (or skipping) that much would let a client tie us up; refuse and hang up.
        if (this.fixedNewstyle && option !== NBD_OPT_EXPORT_NAME) {
          this.send(encodeOptionError(option, NBD_REP_ERR_TOO_BIG, `option data of ${lengthBytes} bytes exceeds ${OPTION_BYTES_MAX}`));
        }
        throw new NbdProtocolError(`${optionName(option)} with ${lengthBytes} bytes of data exceeds ${OPTION_BYTES_MAX}`);
      }
      const payload = await this.reader.read(lengthBytes);
      if (this.log.isLevelEnabled('debug')) this.log.debug({ option: optionName(option), lengthBytes }, 'nbd option');
      if (!this.fixedNewstyle && option !== NBD_OPT_EXPORT_NAME) {
        // Without fixed newstyle the client cannot parse option replies, so nothing else can be answered.
        throw new NbdProtocolError(`${optionName(option)} from a client without fixed newstyle`);
      }
      const outcome = await this.handleOption(option, payload);
      if (outcome !== undefined) return outcome;
    }
    throw new NbdProtocolError(`more than ${OPTIONS_PER_HANDSHAKE_MAX} options`);
  }

  private async handleOption(option: number, payload: Buffer): Promise<HandshakeOutcome | undefined> {
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.exportName(payload);
      case NBD_OPT_ABORT:
        // The spec says to ignore any data here; the client is leaving either way.
        this.send(encodeOptionReply(option, NBD_REP_ACK));
        return { kind: 'aborted' };
      case NBD_OPT_LIST:
        await this.list(payload);
        return undefined;
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.infoOrGo(option, payload);
      case NBD_OPT_STRUCTURED_REPLY:
        if (payload.length !== 0) return this.invalid(option, 'STRUCTURED_REPLY takes no data');
        this.structuredReplies = true;
        this.send(encodeOptionReply(option, NBD_REP_ACK));
        return undefined;
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        return this.metaContextOption(option, payload);
      default:
        // STARTTLS lands here too: this server runs in NOTLS mode, where ERR_UNSUP is allowed.
        this.send(encodeOptionError(option, NBD_REP_ERR_UNSUP, `${optionName(option)} is not supported`));
        return undefined;
    }
  }

  private invalid(option: number, message: string): undefined {
    this.log.debug({ option: optionName(option), reason: message }, 'nbd option refused as invalid');
    this.send(encodeOptionError(option, NBD_REP_ERR_INVALID, message));
    return undefined;
  }

  /** The old way in: no error reply is possible, so any failure is a hard disconnect. */
  private exportName(payload: Buffer): HandshakeOutcome {
    const name = decodeString(payload);
    if (name === undefined) throw new NbdProtocolError('EXPORT_NAME with an invalid name');
    const resolved = this.resolve(name);
    if (resolved === undefined) throw new NbdProtocolError(`EXPORT_NAME: no export named ${JSON.stringify(name)}`);
    const session = this.session(name, resolved.nbdExport);
    this.send(encodeExportNameReply(session.sizeBytes, session.transmissionFlags, !this.noZeroes));
    return { kind: 'transmission', session };
  }

  private async list(payload: Buffer): Promise<void> {
    if (payload.length !== 0) {
      this.invalid(NBD_OPT_LIST, 'LIST takes no data');
      return;
    }
    const exports = this.provider.list();
    if (exports.length > EXPORTS_LISTED_MAX) this.log.warn({ exports: exports.length, listed: EXPORTS_LISTED_MAX }, 'nbd LIST truncated');
    for (const summary of exports.slice(0, EXPORTS_LISTED_MAX)) {
      this.send(encodeOptionReply(NBD_OPT_LIST, NBD_REP_SERVER, encodeServerPayload(summary.name, summary.description)));
      if (this.socket.writableLength > OUTPUT_BUFFERED_BYTES_HIGH) await this.drained();
    }
    this.send(encodeOptionReply(NBD_OPT_LIST, NBD_REP_ACK));
  }

  private infoOrGo(option: number, payload: Buffer): HandshakeOutcome | undefined {
    const parsed = parseInfoRequest(payload);
    if (!parsed.ok) return this.invalid(option, parsed.reason);
    const { name, infoTypes } = parsed.value;
    const resolved = this.resolve(name);
    if (resolved === undefined) {
      this.send(encodeOptionError(option, NBD_REP_ERR_UNKNOWN, `no export named ${JSON.stringify(name)}`));
      return undefined;
    }
    const session = this.session(name, resolved.nbdExport);
    const { export: nbdExport, blockSizes } = session;
    this.send(encodeOptionReply(option, NBD_REP_INFO, encodeInfoExport(session.sizeBytes, session.transmissionFlags)));
    if (infoTypes.includes(NBD_INFO_NAME)) this.send(encodeOptionReply(option, NBD_REP_INFO, encodeInfoString(NBD_INFO_NAME, nbdExport.name)));
    if (infoTypes.includes(NBD_INFO_DESCRIPTION) && nbdExport.description !== undefined) {
      this.send(encodeOptionReply(option, NBD_REP_INFO, encodeInfoString(NBD_INFO_DESCRIPTION, nbdExport.description)));
    }
    // Sent even unasked: our 32 MiB maximum is not the spec's "unlimited" default, and clients ignore what they did not ask for.
    this.send(
      encodeOptionReply(option, NBD_REP_INFO, encodeInfoBlockSize(blockSizes.minimumBytes, blockSizes.preferredBytes, blockSizes.maximumBytes)),
    );
    if (!infoTypes.includes(NBD_INFO_BLOCK_SIZE) && blockSizes.minimumBytes > 1) {
      this.log.debug({ export: nbdExport.name }, 'client did not ask for block sizes; unaligned requests will get EINVAL');
    }
    this.send(encodeOptionReply(option, NBD_REP_ACK));
    return option === NBD_OPT_GO ? { kind: 'transmission', session } : undefined;
  }

  /**
   * Only base:allocation exists. LIST answers it for no query, "base:" or "base:allocation"; SET selects it
   * for "base:allocation". Every other query (other namespaces, unknown leaves) matches nothing, as the spec asks.
   */
  private metaContextOption(option: number, payload: Buffer): undefined {
    const isSet = option === NBD_OPT_SET_META_CONTEXT;
    // SET replaces the selection even when it fails.
    if (isSet) this.metaContext = undefined;
    if (!this.structuredReplies) return this.invalid(option, 'meta contexts need structured replies first');
    const parsed = parseMetaContextRequest(payload);
    if (!parsed.ok) {
      this.send(encodeOptionError(option, parsed.tooBig ? NBD_REP_ERR_TOO_BIG : NBD_REP_ERR_INVALID, parsed.reason));
      return undefined;
    }
    const { name, queries } = parsed.value;
    const matches = isSet
      ? queries.includes(META_CONTEXT_BASE_ALLOCATION)
      : queries.length === 0 || queries.some((query) => query === 'base:' || query === META_CONTEXT_BASE_ALLOCATION);
    if (matches) {
      const contextId = isSet ? META_CONTEXT_BASE_ALLOCATION_ID : 0;
      this.send(encodeOptionReply(option, NBD_REP_META_CONTEXT, encodeMetaContextPayload(contextId, META_CONTEXT_BASE_ALLOCATION)));
    }
    if (isSet) this.metaContext = { exportName: name, baseAllocation: matches };
    this.send(encodeOptionReply(option, NBD_REP_ACK));
    return undefined;
  }

  private resolve(name: string): ResolvedExport | undefined {
    let effectiveName = name;
    let nbdExport: NbdExport | undefined;
    try {
      if (name === '') effectiveName = this.provider.defaultExportName?.() ?? '';
      nbdExport = this.provider.open(effectiveName);
    } catch (error) {
      this.log.error({ err: error, export: effectiveName }, 'nbd export provider failed to open an export');
      return undefined;
    }
    if (nbdExport === undefined) {
      this.log.info({ export: effectiveName }, 'nbd client asked for an unknown export');
      return undefined;
    }
    return { nbdExport };
  }

  private session(requestedName: string, nbdExport: NbdExport): NbdSession {
    const blockSizes = blockSizesOf(nbdExport);
    // BLOCK_STATUS is only allowed when the meta context was set for the export actually chosen.
    const metaContext = this.metaContext;
    const baseAllocation = metaContext !== undefined && metaContext.baseAllocation && metaContext.exportName === requestedName;
    return {
      export: nbdExport,
      sizeBytes: nbdExport.sizeBytes,
      blockSizes,
      transmissionFlags: transmissionFlagsFor(nbdExport, this.structuredReplies),
      structuredReplies: this.structuredReplies,
      baseAllocationContextId: baseAllocation ? META_CONTEXT_BASE_ALLOCATION_ID : undefined,
    };
  }

  private send(bytes: Buffer): void {
    if (this.socket.destroyed || !this.socket.writable) throw new NbdConnectionClosed('socket closed during the handshake');
    this.socket.write(bytes);
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }
}
