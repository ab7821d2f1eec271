"""How a gateway process is started: the uvicorn flags every one of them runs with.

The Makefile's UVICORN_WS, the Dockerfile's command and the Kubernetes gateway's arguments say the
same (tests/test_scaler_deploy.py holds them to it); the scaler's gateways, the live tests' servers
and the benchmarks take them from here.
"""

# WebSockets: uvicorn's sans-I/O protocol less what an open socket does not need
# (gateway/live/ws_protocol.py); no per-message compression (a zlib context of tens of KiB per
# socket, for frames of a few hundred bytes); frames no larger than a client has any reason to send.
UVICORN_FLAGS = [
    *("--ws", "gateway.live.ws_protocol:LeanWebSocketProtocol"),
    *("--ws-per-message-deflate", "false"),
    *("--ws-max-size", "65536"),
]

# What one open socket costs a process in descriptors is one; a process also needs a few hundred
# for itself (its modules, database and Redis connections, the listening socket).
DESCRIPTORS_FOR_ITSELF = 256


def raise_open_files_limit() -> int:
    """Let this process, and every process it starts, open as many files (sockets) as the machine's
    hard limit allows: the soft limit, often 1,024, is raised to it. Past the hard limit only root can
    go, outside the project (docs/sockets-at-scale.md). Returns the limit now."""
    import resource
    from pathlib import Path

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # the kernel caps it anyway (fs.nr_open)
        hard = int(Path("/proc/sys/fs/nr_open").read_text())
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return max(soft, hard)
