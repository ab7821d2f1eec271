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
