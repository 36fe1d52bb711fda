"""The node registry and what keeps it going: records, states and events over a store
(:mod:`.registry`), what the UDP services saw written in the background (:mod:`.sightings`),
booting through a store outage (:mod:`.resilient` with its :mod:`.cache` and
:mod:`.journal`). Only the boot policy (:mod:`pxeserver.boot`) and the daemon's wiring
use it; the protocols never do."""
