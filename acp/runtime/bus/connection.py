"""redis-py connections whose sends time out without a task per command.

redis-py bounds every send on a connection with a socket timeout by
``asyncio.wait_for``, which on Python 3.11 runs the write as a task of its
own: one more event-loop turn and task per command, a large share of a
request/reply round trip. A write to a healthy socket never waits: the bytes
go to the transport's buffer, and only when that buffer is above its high-water
mark (a peer that stops reading) is the wait for room bounded by
``socket_timeout``. Even a timeout scope per write costs more than the write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["timed_sends"]


class _TimedSends(AbstractConnection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        writer: Any = getattr(self, "_writer", None)
        if not timeout or not self.is_connected or writer is None:
            await super().send_packed_command(command, check_health)
            return
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            transport = writer.transport
            if transport.is_closing():
                raise OSError("the connection is closing")
            writer.writelines(command)
            if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                # the peer is not keeping up: wait for room, but not forever
                async with asyncio.timeout(timeout):
                    await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # a half-written command leaves the connection unusable
            await self.disconnect(nowait=True)
            raise


_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def timed_sends(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (TCP, TLS or unix socket connection) with timed sends."""
    if issubclass(cls, _TimedSends):
        return cls
    timed = _CLASSES.get(cls)
    if timed is None:
        timed = _CLASSES[cls] = type(f"Timed{cls.__name__}", (_TimedSends, cls), {})
    return timed
