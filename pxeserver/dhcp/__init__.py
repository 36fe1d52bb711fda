"""ProxyDHCP: the server (:mod:`.proxy`) over pure packet code (:mod:`.packets`)."""
