"""What the CLI's commands do, beside serving: ``check`` (:mod:`.check`), ``demo``
(:mod:`.demo`), ``assets fetch flatcar`` (:mod:`.flatcar`), ``assets ipxe`` (:mod:`.ipxe`).
:mod:`pxeserver.cli` parses the command line and calls them."""
