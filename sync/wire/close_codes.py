"""WebSocket close codes (DESIGN.md section 2). 44xx are final for stock clients."""

NORMAL = 1000
GOING_AWAY = 1001
TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013  # slow consumer, shutting down, database backlog
MALFORMED = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
UNKNOWN_PROJECT = 4404
DOCUMENT_TOO_LARGE = 4413  # the update would grow the document past its limit
RATE_LIMITED = 4429
