"""Bytes on the wire: the y-websocket protocol, Yjs structs and encodings read without
a Doc, messages between instances, and close codes."""
