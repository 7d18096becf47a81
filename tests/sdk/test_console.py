"""What `minivlm-convert` lets through to the terminal from native code on fd 2 (sdk/console.py)."""

import os
import threading
import time

from minivlm import console


def test_the_relay_drops_native_chatter_however_it_is_split_and_passes_the_rest():
    source, into = os.pipe()
    out, sink = os.pipe()
    relay = threading.Thread(target=console._relay, args=(source, sink))
    relay.start()
    for write in [b"\rgraph 1/3",  # a progress bar: no newline
                  b"INFO: ", b"Created TensorFlow Lite XNNPACK delegate for CPU.", b"\n",  # C stdio: three writes
                  b"\rgraph 2/3",
                  b"I0000 00:00:1796034652.485349    7171 port.cc:153] oneDNN custom operations are on.\n"
                  b"E0000 00:00:1796034652.485349    7171 converter.cc:12] a real error\n",
                  b"W1130 10:31:07.532000 7168 torch/utils/_pytree.py:630] <enum 'KernelPreference'> is ...\n",
                  b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
                  b"WARNING: our own warning\n"]:
        os.write(into, write)
        time.sleep(0.001)
    time.sleep(0.2)
    os.write(into, b"\rgraph 3/3")  # held back briefly, then shown without waiting for a newline
    time.sleep(0.2)
    os.write(into, console._END)
    relay.join(5)
    os.close(sink)
    shown = b"".join(iter(lambda: os.read(out, 1 << 16), b""))
    assert shown == (b"\rgraph 1/3\rgraph 2/3E0000 00:00:1796034652.485349    7171 converter.cc:12] a real error\n"
                     b"WARNING: our own warning\n\rgraph 3/3")
    for fd in (source, into, out):
        os.close(fd)
