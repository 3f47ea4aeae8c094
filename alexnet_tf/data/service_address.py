"""tf.data service addresses: checked when given, and probed before use.

TensorFlow itself waits for an unreachable dispatcher: a worker or a
training input pointed at a wrong address retries for up to an hour
(WorkerConfig.dispatcher_timeout_ms), saying nothing. So the launchers
check the address's form with the settings, and ask the dispatcher for its
version (its cheapest RPC) with a deadline before building anything: a
closed port, a host that does not answer or a server that is not a
dispatcher becomes one line naming the address.

No TensorFlow here (the launchers parse flags before it loads); the probe
speaks gRPC directly to `tensorflow.data.DispatcherService`.
"""

from __future__ import annotations

import re

from alexnet_tf.errors import ConfigError, InputError

SCHEME = "grpc://"
PROBE_TIMEOUT_S = 10.0
_DISPATCHER = "/tensorflow.data.DispatcherService/"
# host: a name, an IPv4 address or a bracketed IPv6 one.
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-_]*):(\d+)$")


def parse_address(text: str, field: str, owner: str) -> str:
    """"grpc://HOST:PORT" or "HOST:PORT" -> "HOST:PORT"; anything else is a
    ConfigError naming `owner.field`."""
    address = text[len(SCHEME):] if text.startswith(SCHEME) else text
    match = _HOST_PORT.match(address)
    if "://" in address or not match:
        raise ConfigError(field, text, "must be HOST:PORT or grpc://HOST:PORT (a tf.data "
                          "service dispatcher, e.g. grpc://dispatcher-host:5050)", owner)
    if not 1 <= int(match.group(2)) <= 65535:
        raise ConfigError(field, text, "the port must be in 1..65535", owner)
    return address


class UnreachableDispatcher(InputError):
    """No tf.data service dispatcher answered at the address in time."""


def probe_dispatcher(address: str, timeout: float | None = None) -> int:
    """Asks the dispatcher at HOST:PORT (or grpc://HOST:PORT) how many workers
    it knows; raises UnreachableDispatcher (one line naming the address) when
    nothing that speaks the dispatcher protocol answers within `timeout`
    seconds."""
    import grpc  # TensorFlow's own dependency; loaded only when probing

    address = address[len(SCHEME):] if address.startswith(SCHEME) else address
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout

    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            call = lambda method: channel.unary_unary(_DISPATCHER + method)(
                b"", timeout=timeout)
            call("GetVersion")
            workers = call("GetWorkers")
        except grpc.FutureTimeoutError:
            raise UnreachableDispatcher(
                f"no tf.data service dispatcher at {SCHEME}{address}: nothing answered within "
                f"{timeout:g} s (is `launch.data_service --mode=dispatcher` running there, "
                "and the port open?)") from None
        except grpc.RpcError as e:
            what = ("answers but is not a tf.data service dispatcher"
                    if e.code() == grpc.StatusCode.UNIMPLEMENTED else
                    "did not answer as a tf.data service dispatcher")
            raise UnreachableDispatcher(f"{SCHEME}{address} {what} ({e.code().name}: "
                                        f"{e.details()})") from None
    return _count_field_1(workers)


def _count_field_1(message: bytes) -> int:
    """Occurrences of field 1 in a serialized protobuf message whose fields
    are all length-delimited (GetWorkersResponse: `repeated WorkerInfo
    workers = 1`)."""
    count, at = 0, 0
    while at < len(message):
        key, at = _varint(message, at)
        length, at = _varint(message, at)
        at += length
        count += key >> 3 == 1
    return count


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at
