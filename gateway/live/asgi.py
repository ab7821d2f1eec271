"""ASGI's scope and messages as the sockets and long polls handle them: plain dicts.

asgiref.typing describes them as TypedDicts, which require keys that the ASGI spec leaves out (an
accept's headers, a send's bytes) and can lose none; here scopes are trimmed (a socket forgets its
handshake) and copied with a key of ours, and messages are made, held and replayed.
"""

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

Scope: TypeAlias = dict[str, Any]
Message: TypeAlias = dict[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
App: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
