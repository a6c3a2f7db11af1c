"""Exception hierarchy of :mod:`firmware_bridge`.

Every error raised on purpose by this package derives from :class:`BridgeError`.
Errors of the libraries underneath (``serial.SerialException``, msgpack's
exceptions, ``OSError``) are wrapped at the layer boundary with
``raise TransportError(...) from exc`` so callers only catch ``BridgeError``.

::

    BridgeError
    +-- FramingError              a frame on the wire is damaged
    |   +-- CobsError             invalid COBS stuffing
    |   +-- CrcError              CRC-32 mismatch
    |   +-- FrameLengthError      too short, or header length != actual length
    |   +-- FrameTooLargeError    above the maximum frame size
    +-- ProtocolError             frame intact but the message is not acceptable
    |   +-- UnsupportedVersion
    |   +-- UnknownMessageType
    |   +-- MalformedPayload      payload is not a msgpack map
    |   +-- InvalidField          (also a ValueError) bad/missing field
    +-- TransportError            the byte stream failed
        +-- InvalidUrl            (also a ValueError) URL cannot be opened, not retried
        +-- LinkDown              link is down and will not come back (retries exhausted)

Each framing/protocol class carries ``nack_reason``, the :class:`~firmware_bridge.wire.NackReason`
a receiver puts into the NACK it sends back.
"""

from __future__ import annotations

from .wire import NackReason


class BridgeError(Exception):
    """Root of all errors raised by :mod:`firmware_bridge`."""


class FramingError(BridgeError):
    """A frame is damaged (COBS, length, CRC or size)."""

    nack_reason = NackReason.UNSPECIFIED


class CobsError(FramingError):
    """Invalid COBS encoding (zero byte inside, or a code byte past the end)."""

    nack_reason = NackReason.LENGTH_MISMATCH


class CrcError(FramingError):
    """CRC-32 over header+payload does not match the transmitted CRC."""

    nack_reason = NackReason.CRC_MISMATCH


class FrameLengthError(FramingError):
    """Frame shorter than header+CRC, or header ``payload_length`` disagrees."""

    nack_reason = NackReason.LENGTH_MISMATCH


class FrameTooLargeError(FramingError):
    """Frame (or the bytes buffered for it) exceeds the maximum frame size."""

    nack_reason = NackReason.FRAME_TOO_LARGE


class ProtocolError(BridgeError):
    """The frame is intact but its message violates the protocol."""

    nack_reason = NackReason.UNSPECIFIED


class UnsupportedVersion(ProtocolError):
    """Header version byte is not a supported protocol version."""

    nack_reason = NackReason.UNSUPPORTED_VERSION


class UnknownMessageType(ProtocolError):
    """Header message type is not defined by this protocol version."""

    nack_reason = NackReason.UNKNOWN_MESSAGE_TYPE


class MalformedPayload(ProtocolError):
    """Payload is not valid msgpack, or not a map with string keys."""

    nack_reason = NackReason.MALFORMED_PAYLOAD


class InvalidField(ProtocolError, ValueError):
    """A required field is missing, has the wrong type, or an invalid value."""

    nack_reason = NackReason.INVALID_FIELD


class TransportError(BridgeError):
    """The underlying byte stream (serial port, socket, pty) failed."""


class InvalidUrl(TransportError, ValueError):
    """The port URL is not understood; retrying cannot help."""


class LinkDown(TransportError):
    """The link is down and reconnection was given up."""


__all__ = [
    "BridgeError",
    "CobsError",
    "CrcError",
    "FrameLengthError",
    "FrameTooLargeError",
    "FramingError",
    "InvalidField",
    "InvalidUrl",
    "LinkDown",
    "MalformedPayload",
    "ProtocolError",
    "TransportError",
    "UnknownMessageType",
    "UnsupportedVersion",
]
