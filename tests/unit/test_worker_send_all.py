"""An engine thread's frame goes out whole even when the server's side of the socket is full
(the first send takes part of it, the rest waits for room), and a small one in one send."""

from __future__ import annotations

import socket
import threading
import time

from labs_api.workers.child import _send_all


def test_a_frame_larger_than_the_socket_buffer_arrives_whole_and_in_order():
    sender, receiver = socket.socketpair()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender.setblocking(False)
    frame = bytes(range(256)) * 4096  # 1 MiB: far more than the buffers hold
    received = bytearray()

    def read_slowly() -> None:
        time.sleep(0.1)  # the sender finds the socket full first
        while len(received) < len(frame):
            received.extend(receiver.recv(65536))

    reader = threading.Thread(target=read_slowly)
    reader.start()
    _send_all(sender, frame)
    reader.join(timeout=10)
    assert bytes(received) == frame
    sender.close()
    receiver.close()


def test_a_small_frame_goes_in_one_send():
    sender, receiver = socket.socketpair()
    sender.setblocking(False)
    _send_all(sender, b"\x00\x00\x00\x05hello")
    assert receiver.recv(100) == b"\x00\x00\x00\x05hello"
    sender.close()
    receiver.close()
