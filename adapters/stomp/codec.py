"""STOMP 1.0 / 1.1 / 1.2 frame codec, sans-I/O (no sockets, no asyncio).

    codec = FrameCodec(max_frame_bytes=..., max_headers=...)
    codec.receive_data(data)
    while (event := codec.next_event()) is not NEED_DATA:
        ...                       # a Frame; malformed input raises FrameError

Short input always returns NEED_DATA and never raises; only input that can never become a valid
frame raises :class:`FrameError` (the session answers it with an ERROR frame and closes).

Grammar (STOMP 1.2 "Augmented BNF"):

    frame   = command EOL *( header EOL ) EOL *OCTET NULL *( EOL )
    EOL     = [CR] LF

* End-of-lines between frames are heart-beats; they are skipped here (the transport has already
  noted that something arrived). CR LF is accepted in every version, as RabbitMQ does.
* A ``content-length`` header gives the body size, so bodies may contain NUL octets; without it
  the body ends at the first NUL. [STOMP 1.2 "Header content-length"]
* Repeated headers: only the first occurrence counts. [STOMP 1.2 "Repeated Header Entries"]
* Header escaping: ``\\\\ \\n \\c`` in 1.1, plus ``\\r`` in 1.2; none in 1.0. CONNECT and
  CONNECTED frames are never escaped (they are exchanged before the version is known).
  An undefined escape is a fatal protocol error. [STOMP 1.2 "Value Encoding"]
"""
from __future__ import annotations


__all__ = ["Frame", "FrameCodec", "FrameError", "NEED_DATA", "escape", "unescape",
           "serialize", "UNESCAPED_COMMANDS"]


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: returned by :meth:`FrameCodec.next_event` when the buffer holds no complete frame
NEED_DATA = _NeedData()

#: frames whose headers are never escaped [STOMP 1.2 "Value Encoding"]
UNESCAPED_COMMANDS = frozenset(("CONNECT", "CONNECTED", "STOMP"))


class FrameError(Exception):
    """Input that is not (and can never become) a valid frame. ``message`` is a short summary
    for the ERROR frame's ``message`` header, ``detail`` the body text."""

    def __init__(self, message: str, detail: str = "", headers: dict | None = None):
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message
        self.detail = detail or message
        #: the headers parsed so far (for ``receipt`` -> ``receipt-id`` in the ERROR frame)
        self.headers = headers or {}


class Frame:
    """A STOMP frame. ``headers`` is an insertion-ordered dict (first occurrence of a name wins
    when parsing); ``body`` is bytes."""

    __slots__ = ("command", "headers", "body")

    def __init__(self, command: str, headers: dict[str, str] | None = None, body: bytes = b""):
        self.command = command
        self.headers = headers if headers is not None else {}
        self.body = body

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Frame) and self.command == other.command and
                self.headers == other.headers and self.body == other.body)

    def __repr__(self) -> str:
        return f"Frame({self.command!r}, {self.headers!r}, {self.body[:64]!r})"


# ---------------------------------------------------------------------------- escaping
_ESCAPE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"})
_ESCAPE_12 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"})
_UNESCAPES_11 = {"\\": "\\", "n": "\n", "c": ":"}
_UNESCAPES_12 = {"\\": "\\", "n": "\n", "c": ":", "r": "\r"}
# 1.0 has no escapes: a raw LF would end the header line, so it becomes a space on the way out.
_SANITIZE_10 = str.maketrans({"\n": " ", "\r": " "})


def escape(value: str, version: str) -> str:
    if version == "1.2":
        return value.translate(_ESCAPE_12)
    if version == "1.1":
        return value.translate(_ESCAPE_11)
    return value.translate(_SANITIZE_10)


def unescape(value: str, version: str) -> str:
    """Undo :func:`escape`; an undefined escape sequence raises FrameError. [STOMP 1.2: "Undefined
    escape sequences such as \\t MUST be treated as a fatal protocol error"]"""
    if version == "1.0" or "\\" not in value:
        return value
    table = _UNESCAPES_12 if version == "1.2" else _UNESCAPES_11
    out = []
    i = 0
    n = len(value)
    while i < n:
        j = value.find("\\", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        if j + 1 >= n or value[j + 1] not in table:
            raise FrameError("Bad header", f"undefined escape sequence in header {value!r}")
        out.append(table[value[j + 1]])
        i = j + 2
    return "".join(out)


# ---------------------------------------------------------------------------- encoding
def serialize(frame: Frame, version: str = "1.2") -> bytes:
    """Encode a frame. Header names and values are escaped per ``version`` (except in CONNECT /
    CONNECTED). The caller adds ``content-length`` when it wants one."""
    command = frame.command
    parts = [command, "\n"]
    if command in UNESCAPED_COMMANDS:
        for key, value in frame.headers.items():
            parts += (key, ":", str(value), "\n")
    else:
        for key, value in frame.headers.items():
            parts += (escape(key, version), ":", escape(str(value), version), "\n")
    parts.append("\n")
    return "".join(parts).encode() + bytes(frame.body) + b"\x00"


# ---------------------------------------------------------------------------- decoding
class FrameCodec:
    """Incremental frame parser with bounded memory: a frame larger than ``max_frame_bytes``
    (header block plus body) or with more than ``max_headers`` headers is a FrameError."""

    def __init__(self, max_frame_bytes: int = 16 * 1024 * 1024, max_headers: int = 1000,
                 version: str = "1.0"):
        self.max_frame_bytes = max_frame_bytes
        self.max_headers = max_headers
        #: negotiated protocol version; decides header unescaping. Set by the session.
        self.version = version
        self._buf = bytearray()
        #: start of the unparsed input in _buf
        self._pos = 0
        # Where the search for the end of the header block resumes (no rescans when the header
        # block arrives in pieces), and the parsed head of a frame whose body is incomplete.
        self._scan = 0
        self._head: tuple[str, dict, int, int | None] | None = None
        #: end-of-lines seen between frames (heart-beats), for tests and statistics
        self.heartbeats = 0

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_event(self) -> Frame | _NeedData:
        # Positions are absolute in self._buf; consumed bytes are dropped in one go when the
        # buffer runs dry (_need_data), not frame by frame.
        buf = self._buf
        pos = self._pos
        head = self._head
        if head is None:
            n = len(buf)
            if pos < n and (buf[pos] == 10 or buf[pos] == 13):
                pos = self._pos = self._skip_eols(pos, n)
            if pos >= n:
                return self._need_data()
            # The header block ends at the first empty line (LF LF, possibly with CRs).
            # Look for LF CR LF only before the first LF LF, so that a large buffer of
            # pipelined frames is not scanned to its end for every frame.
            scan = self._scan if self._scan > pos else pos
            end = buf.find(b"\n\n", scan)
            end_crlf = buf.find(b"\n\r\n", scan, n if end < 0 else end + 1)
            if end_crlf >= 0 and (end < 0 or end_crlf < end):
                header_end, body_start = end_crlf, end_crlf + 3
            elif end >= 0:
                header_end, body_start = end, end + 2
            else:
                if n - pos > self.max_frame_bytes:
                    raise FrameError("Frame too large",
                                     f"header block exceeds {self.max_frame_bytes} bytes")
                self._scan = n - 2 if n - 2 > pos else pos
                return self._need_data()
            command, headers = self._parse_head(buf[pos:header_end])
            length = None
            if "content-length" in headers:
                raw = headers["content-length"]
                if not raw.isdigit():
                    raise FrameError("Bad content-length", f"invalid content-length {raw!r}",
                                     headers)
                length = int(raw)
                if body_start - pos + length > self.max_frame_bytes:
                    raise FrameError("Frame too large",
                                     f"frame of {body_start - pos + length} bytes exceeds the "
                                     f"limit of {self.max_frame_bytes} bytes", headers)
                # Fast path: the whole frame is already here (the usual case).
                end = body_start + length
                if end < n:
                    if buf[end] != 0:
                        raise FrameError("Bad frame", "frame body not terminated by NUL after "
                                         "content-length octets", headers)
                    self._pos = end + 1
                    self._scan = 0
                    return Frame(command, headers, bytes(buf[body_start:end]))
            head = (command, headers, body_start, length)
            self._head = head
            self._scan = body_start
        command, headers, body_start, length = head
        if length is not None:
            end = body_start + length
            if len(buf) <= end:
                return self._need_data()
            if buf[end] != 0:
                self._head = None
                raise FrameError("Bad frame", "frame body not terminated by NUL after "
                                 "content-length octets", headers)
        else:
            end = buf.find(b"\x00", self._scan)
            if end < 0:
                if len(buf) - pos > self.max_frame_bytes:
                    self._head = None
                    raise FrameError("Frame too large",
                                     f"frame exceeds the limit of {self.max_frame_bytes} bytes",
                                     headers)
                self._scan = len(buf)
                return self._need_data()
        body = bytes(buf[body_start:end])
        self._pos = end + 1
        self._scan = 0
        self._head = None
        return Frame(command, headers, body)

    def _skip_eols(self, pos: int, n: int) -> int:
        """Skip EOLs between frames (heart-beats) [STOMP 1.2 "Heart-beating"]."""
        buf = self._buf
        while pos < n:
            c = buf[pos]
            if c == 10:
                self.heartbeats += 1
                pos += 1
            elif c == 13:
                if pos + 1 >= n:
                    break  # CR at the end: wait for the LF
                if buf[pos + 1] != 10:
                    raise FrameError("Bad frame", "carriage return not followed by a line feed")
                self.heartbeats += 1
                pos += 2
            else:
                break
        return pos

    def _need_data(self) -> _NeedData:
        """Drop the consumed prefix of the buffer (shifting the saved positions), then wait."""
        pos = self._pos
        if pos:
            del self._buf[:pos]
            self._pos = 0
            self._scan = self._scan - pos if self._scan > pos else 0
            head = self._head
            if head is not None:
                self._head = (head[0], head[1], head[2] - pos, head[3])
        return NEED_DATA

    def _parse_head(self, block: bytes | bytearray) -> tuple[str, dict[str, str]]:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("Bad frame", "frame command and headers must be UTF-8") from None
        lines = text.split("\n")
        command = lines[0]
        if command.endswith("\r"):
            command = command[:-1]
        if not command:
            raise FrameError("Bad frame", "empty command")
        if len(lines) - 1 > self.max_headers:
            raise FrameError("Too many headers",
                             f"frame has {len(lines) - 1} headers; the limit is {self.max_headers}")
        headers: dict[str, str] = {}
        # Fast path: most header blocks hold neither CRs nor escapes.
        escaped = (self.version != "1.0" and command not in UNESCAPED_COMMANDS and
                   "\\" in text)
        has_cr = "\r" in text
        version = self.version
        for line in lines[1:]:
            if has_cr and line.endswith("\r"):
                line = line[:-1]
            key, sep, value = line.partition(":")
            if not sep:
                raise FrameError("Bad header", f"header line without a colon: {line[:80]!r}",
                                 headers)
            if escaped:
                try:
                    key = unescape(key, version)
                    value = unescape(value, version)
                except FrameError as exc:
                    exc.headers = headers  # so that the ERROR can still carry receipt-id
                    raise
            if key not in headers:  # the first of repeated headers wins
                headers[key] = value
        return command, headers
