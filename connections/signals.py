"""What connections tell the rest of the portal, without knowing who listens."""

from django.dispatch import Signal

# sent with connection=<Connection>, created=<bool> after a connect or admin consent
connected = Signal()
# sent with connection=<Connection> as a disconnect begins, while its tokens still work
disconnecting = Signal()
# sent with connection=<Connection> after a disconnect
disconnected = Signal()
