"""The machine pxeserver runs on: its network interfaces and addresses (:mod:`.netif`),
running without root (:mod:`.privileges`), child processes that die with it
(:mod:`.children`), the file descriptors its connections need (:mod:`.resources`), and
what one server owns there: its data folder and ports (:mod:`.claims`)."""
