"""What tests share, so that no test module imports another: settings and profiles
(:mod:`.settings`), DHCP's golden packets and exchange (:mod:`.dhcp`), TFTP clients
(:mod:`.tftp`), the CLI (:mod:`.cli`), a node booting through the app (:mod:`.web`), fake
stores (:mod:`.fakes`), real etcd (:mod:`.etcd`), real server processes (:mod:`.server`),
ports and waiting (:mod:`.net`), /proc (:mod:`.processes`), a browser (:mod:`.browser`),
signing keys (:mod:`.gpgkeys`) and an HTTP file server (:mod:`.httpfiles`)."""
