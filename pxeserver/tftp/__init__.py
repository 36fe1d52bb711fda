"""TFTP: the listening server (:mod:`.server`), the transfer loops (:mod:`.transfers`),
the files it serves (:mod:`.files`) and pure packet code (:mod:`.packets`)."""
