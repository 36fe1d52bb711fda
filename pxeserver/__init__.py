"""pxeserver: PXE-boots bare machines into cluster nodes.

ProxyDHCP and TFTP bring a machine's firmware to iPXE; HTTP gives it a script, a kernel,
an initrd and a cloud-config made for it alone; a registry in etcd (or an embedded SQLite
file) follows it from its first DHCP packet until it phones home, and after.
"""

__version__ = "0.1.0"
