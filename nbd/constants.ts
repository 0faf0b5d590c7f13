/**
 * Numbers of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md) and the limits this server puts on
 * every input. Wire values are named as in the spec; limits carry their unit last.
 */

const KiB = 1024;
const MiB = 1024 * KiB;

// ---- Magics -------------------------------------------------------------------------------------

/** "NBDMAGIC", the first 8 bytes the server sends. */
export const NBD_INIT_PASSWD = 0x4e42444d41474943n;
/** "IHAVEOPT": the newstyle greeting's second magic and the magic of every option request. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Magic of every option reply in fixed newstyle. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---- Handshake flags (server, 16 bits) and client flags (32 bits) --------------------------------

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
/** What this server offers; a client flag outside it ends the connection (spec: MUST drop). */
export const HANDSHAKE_FLAGS = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;
export const CLIENT_FLAGS_KNOWN = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

// ---- Transmission flags (16 bits) ----------------------------------------------------------------

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- Options ---------------------------------------------------------------------------------------

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---- Option replies ---------------------------------------------------------------------------------

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// ---- NBD_REP_INFO types --------------------------------------------------------------------------------

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---- Commands and command flags ---------------------------------------------------------------------

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAGS_KNOWN =
  NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF | NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FAST_ZERO;

// ---- Structured replies ----------------------------------------------------------------------------

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// ---- base:allocation ---------------------------------------------------------------------------------

export const META_CONTEXT_BASE_ALLOCATION = 'base:allocation';
/** The id this server gives base:allocation in SET_META_CONTEXT; LIST replies use 0 as the spec says. */
export const META_CONTEXT_BASE_ALLOCATION_ID = 1;
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// ---- Wire sizes ------------------------------------------------------------------------------------

export const GREETING_BYTES = 18; // NBDMAGIC + IHAVEOPT + 16-bit handshake flags
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16; // IHAVEOPT + option + length
export const OPTION_REPLY_HEADER_BYTES = 20; // magic + option + type + length
export const EXPORT_NAME_REPLY_ZEROES_BYTES = 124;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
export const BLOCK_DESCRIPTOR_BYTES = 8;

// ---- Limits --------------------------------------------------------------------------------------------

/** The spec's bound on every string (export names, descriptions, queries, messages). */
export const STRING_BYTES_MAX = 4096;
/** An option's payload above this gets NBD_REP_ERR_TOO_BIG and a hard disconnect (it would be a DoS). */
export const OPTION_BYTES_MAX = 64 * KiB;
/** Options in one handshake (nbdinfo --list spends two per export); a client looping on options is cut off. */
export const OPTIONS_PER_HANDSHAKE_MAX = 16_384;
/** Queries in one LIST/SET_META_CONTEXT; more get NBD_REP_ERR_TOO_BIG. */
export const META_QUERIES_MAX = 128;
/** Exports announced by NBD_OPT_LIST; the rest are left out (and logged). */
export const EXPORTS_LISTED_MAX = 4096;
export const HANDSHAKE_TIMEOUT_MS_DEFAULT = 10_000;
export const CONNECTIONS_MAX_DEFAULT = 256;
export const REQUESTS_IN_FLIGHT_MAX_DEFAULT = 128;
/** Read lengths + write payloads being served on one connection before it stops reading requests. */
export const IN_FLIGHT_BYTES_MAX = 64 * MiB;
/** Unparsed bytes kept from a socket before it is paused (a pending payload may need more). */
export const INPUT_BUFFERED_BYTES_HIGH = 2 * MiB;
/** Replies queued in the socket before the connection stops reading requests until 'drain'. */
export const OUTPUT_BUFFERED_BYTES_HIGH = 16 * MiB;
/**
 * Write payloads above this are a denial of service: hard disconnect (the spec says lengths below
 * 2^25 should not be treated so; payloads between the export's maximum and this are read and refused).
 */
export const WRITE_PAYLOAD_BYTES_DISCONNECT = 32 * MiB;
/** Extents in one NBD_REPLY_TYPE_BLOCK_STATUS chunk; the spec lets the server return fewer. */
export const EXTENTS_PER_REPLY_MAX = 64 * KiB;
/** Error messages we send are short; the spec caps them at 4096 bytes. */
export const ERROR_MESSAGE_BYTES_MAX = 256;
/** How long close() lets in-flight requests finish before it drops connections. */
export const SHUTDOWN_GRACE_MS = 5_000;
export const KEEPALIVE_INITIAL_DELAY_MS = 30_000;

// ---- Block sizes (spec "Block size constraints") ---------------------------------------------------------

export const BLOCK_BYTES_MINIMUM_DEFAULT = 1;
export const BLOCK_BYTES_PREFERRED_DEFAULT = 4 * KiB;
export const BLOCK_BYTES_MAXIMUM_DEFAULT = 32 * MiB;
/** An advertised minimum block size may not exceed 64 KiB. */
export const BLOCK_BYTES_MINIMUM_LIMIT = 64 * KiB;
/** The preferred block size must be at least 512. */
export const BLOCK_BYTES_PREFERRED_FLOOR = 512;
/** 32-bit length fields: nothing larger can be requested or advertised. */
export const UINT32_MAX = 0xffffffff;
