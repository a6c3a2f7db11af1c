"""Wire-level constants of the instrument protocol (version 1).

Everything a C implementation needs as a ``#define`` lives here; PROTOCOL.md is
the normative description.

Frame layout before COBS stuffing (all integers little-endian)::

    offset  size  field
    0       1     version          (PROTOCOL_VERSION = 1)
    1       1     msg_type         (MessageType)
    2       1     flags            (FLAG_* bits)
    3       1     reserved         (0 on send, ignored on receive)
    4       4     seq              (u32)
    8       4     payload_length   (u32, bytes of msgpack payload)
    12      N     payload          (msgpack map)
    12+N    4     crc32            (zlib CRC-32 of bytes 0 .. 12+N-1)
"""

from __future__ import annotations

import enum
import struct

PROTOCOL_VERSION = 1
#: ``<BBBBII``: version, msg_type, flags, reserved, seq, payload_length.
HEADER = struct.Struct("<BBBBII")
HEADER_SIZE = HEADER.size  # 12
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE  # 16
#: Largest decoded frame (header + payload + CRC), in bytes.
MAX_FRAME_SIZE = 65536
MAX_PAYLOAD_SIZE = MAX_FRAME_SIZE - OVERHEAD
DELIMITER = 0x00

#: Frame is a retransmission from the instrument's ring buffer.
FLAG_RETRANSMIT = 0x01

SEQ_MOD = 1 << 32
SEQ_MASK = SEQ_MOD - 1
SEQ_HALF = 1 << 31


class MessageType(enum.IntEnum):
    """Message type codes (header byte 1)."""

    SPECTRUM = 0x01            #: instrument -> host, sequenced
    STATUS = 0x02              #: instrument -> host, heartbeat; seq = next SPECTRUM seq
    RESEND_UNAVAILABLE = 0x03  #: instrument -> host; seq = the requested seq
    HELLO = 0x10               #: host -> instrument, on every (re)connect; seq = 0
    ACK = 0x11                 #: host -> instrument; seq = acknowledged SPECTRUM seq
    NACK = 0x12                #: either direction; seq = seq of the rejected frame
    RESEND_REQUEST = 0x13      #: host -> instrument; seq = the wanted SPECTRUM seq


class NackReason(enum.IntEnum):
    """Reason codes carried by NACK (payload key ``reason``)."""

    UNSPECIFIED = 0
    CRC_MISMATCH = 1          #: retryable: sender should retransmit
    LENGTH_MISMATCH = 2       #: retryable: sender should retransmit
    UNSUPPORTED_VERSION = 3
    UNKNOWN_MESSAGE_TYPE = 4
    MALFORMED_PAYLOAD = 5     #: payload is not a msgpack map
    INVALID_FIELD = 6         #: missing key, wrong type, non-finite value, length mismatch
    FRAME_TOO_LARGE = 7


#: NACK reasons after which a retransmission can succeed.
RETRYABLE_NACK_REASONS = frozenset({NackReason.CRC_MISMATCH, NackReason.LENGTH_MISMATCH})
