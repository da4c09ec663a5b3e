"""Webhooks: each time a run rests, its receiver is told, signed, retried, and never trusted.

A delivery is stored in the same transaction as the rest it reports (`outbox`), so none is lost
or invented; a sender sends it afterwards (`sender`), so a slow or failing receiver never holds
a run. Only allowed hosts are called (`policy`), checked when the run is created and again
before each try, after DNS resolution: the request goes to the address that was checked, and a
host name that resolves to a private address is refused unless that address itself is allowed.
"""
