package nbd

// Numbers of the protocol, with the names doc/proto.md gives them. All
// integers on the wire are big-endian.

const (
	nbdMagic         = 0x4e42444d41474943 // "NBDMAGIC", the server's first word
	optMagic         = 0x49484156454f5054 // "IHAVEOPT", before every option
	optReplyMagic    = 0x0003e889045565a9 // before every option reply
	requestMagic     = 0x25609513         // NBD_REQUEST_MAGIC
	simpleReplyMagic = 0x67446698         // NBD_SIMPLE_REPLY_MAGIC
	chunkReplyMagic  = 0x668e33ef         // NBD_STRUCTURED_REPLY_MAGIC
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	flagNoZeroes       = 1 << 1 // NBD_FLAG_NO_ZEROES
	flagCFixedNewstyle = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	flagCNoZeroes      = 1 << 1 // NBD_FLAG_C_NO_ZEROES
)

// Transmission flags.
const (
	flagHasFlags     = 1 << 0 // NBD_FLAG_HAS_FLAGS
	flagReadOnly     = 1 << 1 // NBD_FLAG_READ_ONLY
	flagSendFlush    = 1 << 2 // NBD_FLAG_SEND_FLUSH
	flagCanMultiConn = 1 << 8 // NBD_FLAG_CAN_MULTI_CONN

	transmissionFlags = flagHasFlags | flagReadOnly | flagSendFlush | flagCanMultiConn
)

// Options.
const (
	optExportName      = 1  // NBD_OPT_EXPORT_NAME
	optAbort           = 2  // NBD_OPT_ABORT
	optList            = 3  // NBD_OPT_LIST
	optStartTLS        = 5  // NBD_OPT_STARTTLS
	optInfo            = 6  // NBD_OPT_INFO
	optGo              = 7  // NBD_OPT_GO
	optStructuredReply = 8  // NBD_OPT_STRUCTURED_REPLY
	optListMetaContext = 9  // NBD_OPT_LIST_META_CONTEXT
	optSetMetaContext  = 10 // NBD_OPT_SET_META_CONTEXT
)

// Option reply types.
const (
	repAck         = 1         // NBD_REP_ACK
	repServer      = 2         // NBD_REP_SERVER
	repInfo        = 3         // NBD_REP_INFO
	repMetaContext = 4         // NBD_REP_META_CONTEXT
	repErrUnsup    = 1<<31 + 1 // NBD_REP_ERR_UNSUP
	repErrPolicy   = 1<<31 + 2 // NBD_REP_ERR_POLICY
	repErrInvalid  = 1<<31 + 3 // NBD_REP_ERR_INVALID
	repErrUnknown  = 1<<31 + 6 // NBD_REP_ERR_UNKNOWN
)

// Information types of NBD_REP_INFO.
const (
	infoExport      = 0 // NBD_INFO_EXPORT
	infoName        = 1 // NBD_INFO_NAME
	infoDescription = 2 // NBD_INFO_DESCRIPTION
	infoBlockSize   = 3 // NBD_INFO_BLOCK_SIZE
)

// Commands and command flags.
const (
	cmdRead        = 0 // NBD_CMD_READ
	cmdWrite       = 1 // NBD_CMD_WRITE
	cmdDisc        = 2 // NBD_CMD_DISC
	cmdFlush       = 3 // NBD_CMD_FLUSH
	cmdTrim        = 4 // NBD_CMD_TRIM
	cmdWriteZeroes = 6 // NBD_CMD_WRITE_ZEROES
	cmdBlockStatus = 7 // NBD_CMD_BLOCK_STATUS

	// cmdFlagFUA is accepted (and ignored) on any command: the
	// specification notes that existing clients set it even where it
	// means nothing, and nothing is ever written here.
	cmdFlagFUA = 1 << 0
	// cmdFlagReqOne asks NBD_CMD_BLOCK_STATUS for one extent only.
	cmdFlagReqOne = 1 << 3
)

// Structured replies: each is one chunk here, flagged as the last.
const (
	replyFlagDone        = 1 << 0    // NBD_REPLY_FLAG_DONE
	replyTypeNone        = 0         // NBD_REPLY_TYPE_NONE
	replyTypeOffsetData  = 1         // NBD_REPLY_TYPE_OFFSET_DATA
	replyTypeBlockStatus = 5         // NBD_REPLY_TYPE_BLOCK_STATUS
	replyTypeError       = 1<<15 + 1 // NBD_REPLY_TYPE_ERROR
)

// The one metadata context served: base:allocation, whose extents carry
// NBD_STATE_HOLE and NBD_STATE_ZERO. Its ID is the server's choice.
const (
	metaBaseAllocation = "base:allocation"
	baseAllocationID   = 1
	stateHole          = 1 << 0 // NBD_STATE_HOLE
	stateZero          = 1 << 1 // NBD_STATE_ZERO
)

// Errors of simple replies.
const (
	errPerm  = 1  // NBD_EPERM
	errIO    = 5  // NBD_EIO
	errInval = 22 // NBD_EINVAL
)

// Sizes of the fixed parts of messages.
const (
	optHeaderLen     = 16 // magic, option, length
	requestHeaderLen = 28 // magic, flags, type, handle, offset, length
	replyHeaderLen   = 16 // magic, error, handle
	chunkHeaderLen   = 20 // magic, flags, type, handle, length
	zeroPadLen       = 124
)

const (
	// MaxRequest is the longest read (and write payload) a client may
	// send: 32 MiB, the maximum block size the specification tells clients
	// that want to work with any server to keep to. It is advertised as
	// the maximum block size in NBD_INFO_BLOCK_SIZE.
	MaxRequest = 32 << 20

	// maxOption bounds the data of one option. The longest option a
	// real client sends is NBD_OPT_GO: a name of at most 4096 bytes and a
	// few information requests.
	maxOption = 64 << 10

	// maxString is the specification's limit on names and descriptions.
	maxString = 4096

	// maxExtents bounds the descriptors of one block status reply, and
	// maxAllocationCalls the export's answers that one request asks for;
	// a reply that stops short of the request's end is allowed, and the
	// client asks again from there.
	maxExtents         = 1024
	maxAllocationCalls = 16 << 10
)
