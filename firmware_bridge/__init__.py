"""Framed serial protocol between instrument firmware and the edge daemon, and a simulated instrument.

Layers, bottom to top: :mod:`~firmware_bridge.transport` (serial URL, reconnect)
-> :mod:`~firmware_bridge.framing` (COBS, header, CRC-32) ->
:mod:`~firmware_bridge.protocol` (msgpack messages, sequence tracking) ->
:mod:`~firmware_bridge.link` (resend, dedupe, delivery). ``PROTOCOL.md`` in this
package is the wire specification; ``test_vectors.json`` holds conformance vectors.
:mod:`~firmware_bridge.simulator` is a virtual instrument (pty or TCP) with fault
injection and the ``edge-bridge`` command line (``main``).

Depends only on numpy, msgpack, pyserial and the standard library.
"""

from .errors import (
                     BridgeError,
                     CobsError,
                     CrcError,
                     FrameLengthError,
                     FrameTooLargeError,
                     FramingError,
                     InvalidField,
                     InvalidUrl,
                     LinkDown,
                     MalformedPayload,
                     ProtocolError,
                     TransportError,
                     UnknownMessageType,
                     UnsupportedVersion,
)
from .framing import Frame, FrameDecoder, Rejection, encode_frame
from .link import InstrumentLink, LinkConfig
from .protocol import (
                     Ack,
                     Hello,
                     Nack,
                     ResendRequest,
                     ResendUnavailable,
                     SequenceTracker,
                     SpectrumMessage,
                     StatusMessage,
                     decode_frame,
                     encode_message,
)
from .transport import Backoff, Deadline, LinkStateEvent, ReconnectingPort, open_port
from .wire import MAX_FRAME_SIZE, PROTOCOL_VERSION, MessageType, NackReason

__all__ = [
                     "MAX_FRAME_SIZE",
                     "PROTOCOL_VERSION",
                     "Ack",
                     "Backoff",
                     "BridgeError",
                     "CobsError",
                     "CrcError",
                     "Deadline",
                     "Frame",
                     "FrameDecoder",
                     "FrameLengthError",
                     "FrameTooLargeError",
                     "FramingError",
                     "Hello",
                     "InstrumentLink",
                     "InvalidField",
                     "InvalidUrl",
                     "LinkConfig",
                     "LinkDown",
                     "LinkStateEvent",
                     "MalformedPayload",
                     "MessageType",
                     "Nack",
                     "NackReason",
                     "ProtocolError",
                     "ReconnectingPort",
                     "Rejection",
                     "ResendRequest",
                     "ResendUnavailable",
                     "SequenceTracker",
                     "SpectrumMessage",
                     "StatusMessage",
                     "TransportError",
                     "UnknownMessageType",
                     "UnsupportedVersion",
                     "decode_frame",
                     "encode_frame",
                     "encode_message",
                     "open_port",
]
